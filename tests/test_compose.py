"""The docker-compose file is valid and configures TPS only through real settings."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tps.config.settings import ENV_NAMES

ROOT = Path(__file__).resolve().parent.parent


def compose_config(*args: str) -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose not found: install it with "
                    "'apt-get install -y docker-compose' (scripts/test does this)",
                    pytrace=False)
    proc = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), *args, "config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = yaml.safe_load(proc.stdout)
    return result


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config("--profile", "scale")


def test_compose_file_validates_with_the_seed_services(config: dict[str, Any]) -> None:
    services = config["services"]
    assert {"timeseries_temperature_db", "satellite-temperature", "tps"} <= set(services)
    db_env = services["timeseries_temperature_db"]["environment"]
    assert db_env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert db_env["DOCKER_INFLUXDB_INIT_BUCKET"] == "my-bucket"
    assert db_env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert services["timeseries_temperature_db"]["image"].startswith("influxdb:2")


def test_every_tps_variable_in_compose_is_a_real_setting(config: dict[str, Any]) -> None:
    used = {name for service in config["services"].values()
            for name in service.get("environment", {}) if name.startswith("TPS_")}
    assert used, "compose sets no TPS_* variables"
    assert used <= ENV_NAMES, f"unknown settings in compose: {sorted(used - ENV_NAMES)}"


def test_tps_waits_for_healthy_dependencies_and_restarts(config: dict[str, Any]) -> None:
    for name in ("tps", "tps-ingest-a", "tps-ingest-b", "tps-api"):
        service = config["services"][name]
        assert service["restart"] == "unless-stopped"
        for dep in service["depends_on"].values():
            assert dep["condition"] == "service_healthy"
    tps_env = config["services"]["tps"]["environment"]
    assert tps_env["TPS_INFLUX_DB"] == "my-bucket"
    assert tps_env["TPS_FEEDS"].endswith("ws://satellite-temperature:4000/graphql")


def test_scale_profile_splits_feeds_between_ingest_instances(config: dict[str, Any]) -> None:
    services = config["services"]
    roles = {name: s["environment"].get("TPS_ROLE") for name, s in services.items()
             if name.startswith("tps")}
    assert roles == {"tps": "all", "tps-ingest-a": "ingest", "tps-ingest-b": "ingest",
                     "tps-api": "api"}
    feeds_a = services["tps-ingest-a"]["environment"]["TPS_FEEDS"]
    feeds_b = services["tps-ingest-b"]["environment"]["TPS_FEEDS"]
    assert feeds_a.split("=")[0] != feeds_b.split("=")[0]


def test_default_profile_runs_only_the_three_seed_services(config: dict[str, Any]) -> None:
    unprofiled = {name for name, service in config["services"].items()
                  if not service.get("profiles")}
    assert unprofiled == {"timeseries_temperature_db", "satellite-temperature", "tps"}
    for name in ("tps-ingest-a", "tps-ingest-b", "tps-api"):
        assert config["services"][name]["profiles"] == ["scale"]
    profiled = {name for name, service in compose_config("--profile", "cluster")["services"]
                .items() if service.get("profiles") == ["cluster"]}
    assert profiled and not profiled & unprofiled


def test_dockerfile_runs_as_non_root_with_a_health_check() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1\d-slim", text, re.M)
    assert re.search(r"^USER tps$", text, re.M)
    assert "HEALTHCHECK" in text and "/health" in text


def test_cluster_profile_runs_three_nats_nodes_two_ingest_one_writer_one_api() -> None:
    config = compose_config("--profile", "cluster")
    services = config["services"]
    nats = [name for name in services if name.startswith("nats-")]
    assert sorted(nats) == ["nats-1", "nats-2", "nats-3"]
    for name in nats:
        command = services[name]["command"]
        assert "--jetstream" in command and "--cluster_name" in command
        routes = command[command.index("--routes") + 1].split(",")
        assert len(routes) == 3
        assert services[name]["profiles"] == ["cluster"]
    roles = {name: s["environment"]["TPS_ROLE"] for name, s in services.items()
             if name.startswith("cluster-")}
    assert sorted(roles.values()) == ["api", "ingest", "ingest", "writer"]
    urls = {s["environment"]["TPS_NATS_URL"] for name, s in services.items()
            if name.startswith("cluster-")}
    assert urls == {"nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222"}
    used = {name for s in services.values() for name in s.get("environment", {})
            if name.startswith("TPS_")}
    assert used <= ENV_NAMES, f"unknown settings in compose: {sorted(used - ENV_NAMES)}"
    names = {s["environment"]["TPS_INSTANCE"] for name, s in services.items()
             if name.startswith("cluster-")}
    assert len(names) == 4, "every instance needs its own TPS_INSTANCE"
    for name in roles:
        deps = services[name]["depends_on"]
        assert {"nats-1", "nats-2", "nats-3"} <= set(deps)
        assert all(dep["condition"] == "service_healthy" for dep in deps.values())
