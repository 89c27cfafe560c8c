"""The OpenAPI document stays true: schemathesis fuzzes a running server from it.

Every documented operation gets generated requests (valid ones, with the control
token, and invalid ones); no answer may be a 5xx, and every answer must match the
document (status code, content type, headers, body schema). Bounded to a few dozen
requests per operation so it runs in seconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode, checks

from tests.support.influxdb import InfluxServer
from tests.test_rest import TOKEN, Stack, call
from tps.api.openapi import openapi_document

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, influx: InfluxServer) -> Iterator[Stack]:
    db = f"tps_fuzz_{os.getpid()}"
    stack = Stack(Path(tmp_path_factory.mktemp("fuzz-data")), influx, db)
    yield stack
    stack.close()
    influx.drop_database(db)


def test_the_served_document_is_the_generated_one(server: Stack) -> None:
    answer = call("GET", server.url + "/api/openapi.json")
    assert answer.status == 200
    assert answer.body == openapi_document()
    assert answer.body["openapi"].startswith("3.")


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzing_every_operation_finds_no_5xx_and_no_schema_violation(
    server: Stack, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/api/openapi.json")
    # get_all_operations yields Ok/Err results; an Err (an invalid document) raises here.
    operations = [result.ok() for result in cast(Any, schema.get_all_operations())]
    assert len(operations) == 15
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and "{" not in operation.path and not operation.body:
            continue  # nothing to make invalid (GET /health, GET /api/streams)

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=12,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS,
                                   timeout=20)

        fuzz()
    # Streams the fuzzer managed to add are removed again so nothing keeps running.
    for stream in call("GET", server.url + "/api/streams").body["streams"]:
        call("DELETE", f"{server.url}/api/streams/{quote(stream['name'], safe='')}",
             token=TOKEN)
