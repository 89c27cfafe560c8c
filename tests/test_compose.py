"""The docker-compose file is valid and configures TPS only through real settings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tps.config.settings import ENV_NAMES

ROOT = Path(__file__).resolve().parent.parent


SECRETS = ("INFLUXDB_ADMIN_PASSWORD", "TPS_INFLUX_TOKEN", "TPS_CONTROL_TOKEN")


def _env_file(tmp: Path, filled: bool) -> Path:
    """.env.example as a user fills it in (or leaves it empty)."""
    text = (ROOT / ".env.example").read_text()
    if filled:
        text = re.sub(r"^([A-Z_]+)=$", r"\1=secret-of-\1", text, flags=re.M)
    path = tmp / "compose.env"
    path.write_text(text)
    return path


def run_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose not found: install it with "
                    "'apt-get install -y docker-compose' (scripts/test does this)",
                    pytrace=False)
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "--env-file", str(env_file), *args,
         "config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )


def compose_config(env_file: Path, *args: str) -> dict[str, Any]:
    proc = run_compose(env_file, *args)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = yaml.safe_load(proc.stdout)
    return result


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    env_file = _env_file(tmp_path_factory.mktemp("compose"), filled=True)
    return compose_config(env_file, "--profile", "scale", "--profile", "monitoring",
                          "--profile", "cluster")


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
    profiled = {name for name, service in config["services"].items()
                if service.get("profiles") == ["cluster"]}
    assert profiled and not profiled & unprofiled
    assert config["services"]["prometheus"]["profiles"] == ["monitoring"]


def _published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, host port) of every published port ("" address: all interfaces)."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((str(port.get("host_ip", "")), str(port.get("published", ""))))
            continue
        parts = str(port).split("/")[0].split(":")
        found.append(("", parts[0]) if len(parts) == 2 else (parts[0], parts[1]))
    return found


def test_only_tps_is_published_on_every_interface(config: dict[str, Any]) -> None:
    """Item 11: InfluxDB and Prometheus on loopback only, the simulator unpublished."""
    services = config["services"]
    exposed = {name: addr for name, s in services.items() for addr, _ in _published(s)
               if addr in ("", "0.0.0.0", "::")}
    assert set(exposed) <= {"tps", "tps-api", "cluster-api"}, exposed
    assert _published(services["tps"]) == [("", "8000")]
    assert _published(services["timeseries_temperature_db"]) == [("127.0.0.1", "8086")]
    assert _published(services["prometheus"]) == [("127.0.0.1", "9090")]
    assert _published(services["satellite-temperature"]) == []


def test_secrets_come_from_an_env_file_the_user_creates(tmp_path: Path) -> None:
    """Item 11: no default secret; compose refuses to run until .env sets them."""
    text = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"\$\{[A-Z_]*(TOKEN|PASSWORD)[A-Z_]*:-", text), "a secret has a default"
    example = (ROOT / ".env.example").read_text()
    assert re.findall(r"^([A-Z_]+)=$", example, re.M) == list(SECRETS)
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    refused = run_compose(_env_file(tmp_path, filled=False))
    assert refused.returncode != 0
    assert "in .env (copy .env.example)" in refused.stderr, refused.stderr
    services = compose_config(_env_file(tmp_path, filled=True))["services"]
    assert services["tps"]["environment"]["TPS_CONTROL_TOKEN"] == "secret-of-TPS_CONTROL_TOKEN"
    db_env = services["timeseries_temperature_db"]["environment"]
    assert db_env["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == services["tps"]["environment"][
        "TPS_INFLUX_TOKEN"] == "secret-of-TPS_INFLUX_TOKEN"


def test_one_shared_tps_image_and_pinned_tags(config: dict[str, Any]) -> None:
    """Item 11: every TPS service runs the image built once; other images are pinned."""
    services = config["services"]
    ours = {name: s for name, s in services.items()
            if name.startswith(("tps", "cluster-")) or name == "satellite-temperature"}
    assert {s["image"] for s in ours.values()} == {"tps:local"}
    for name, service in services.items():
        if name in ours:
            continue
        assert "build" not in service
        pinned = r"[\w./-]+:v?\d+\.\d+\.\d+(-[\w.]+)?"
        assert re.fullmatch(pinned, service["image"]), service["image"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim-bookworm$", dockerfile, re.M)


def test_dockerfile_runs_as_non_root_with_a_readiness_health_check() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER tps$", text, re.M)
    assert "HEALTHCHECK" in text and "/ready" in text


def test_monitoring_profile_scrapes_tps_metrics(config: dict[str, Any]) -> None:
    """Item 12: the profile's Prometheus reads the shipped configuration."""
    prometheus = config["services"]["prometheus"]
    mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}"
              for v in prometheus["volumes"]]
    assert any(m.startswith(str(ROOT / "monitoring" / "prometheus.yml") + ":/etc/prometheus/")
               for m in mounts), mounts
    scrape = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    job = scrape["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["tps:8000"]


def test_cluster_profile_runs_three_nats_nodes_two_ingest_one_writer_one_api(
    config: dict[str, Any],
) -> None:
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
