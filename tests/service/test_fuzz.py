"""A fuzzer over every operation of /openapi.json finds no server error.

schemathesis generates requests from the app's own OpenAPI schema, valid ones (positive) and, for
every operation that can take an invalid input, invalid ones (negative), sends them with the API
key to a real uvicorn serving the app, and checks `not_a_server_error`: every answer is below 500,
whatever the input (a reset connection fails too). The app serves a private copy of the index
(the fuzzer adds documents and starts rebuilds) with a `max_tokens` cap of 16, the default
`max_tokens`; 40 examples per operation and mode take about 25 s on two cores.
"""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from service.app import create_app
from tests.service.conftest import API_KEY, live_server, make_settings

EXAMPLES_PER_OPERATION = 40
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def can_be_invalid(operation: dict) -> bool:
    """Whether any input of the operation can be invalid: a body, or a parameter other than a
    string in the path (any string is a valid path segment)."""
    parameters = operation.get("parameters", [])
    return "requestBody" in operation or any(
        p["in"] != "path" or p.get("schema", {}).get("type") != "string" for p in parameters
    )


# Every operation the app declares (read from its schema without loading anything), so that a new
# route is fuzzed without anyone listing it here; invalid inputs for those that can take them.
SPEC = create_app(make_settings()).openapi()
OPERATIONS = sorted(
    (method.upper(), path, mode)
    for path, methods in SPEC["paths"].items()
    for method, operation in methods.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE or can_be_invalid(operation)
)


@pytest.fixture(autouse=True)
def subnormal_floats():
    """hypothesis refuses to run where subnormal floats flush to zero, and `retro.train` turns
    flushing on for the whole process (CPU training slows 8x on denormals): a training test earlier
    in the same session leaves it on. The fuzzer's own process state is restored here."""
    import torch

    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def served(settings, tmp_path_factory):
    """(schema, base URL) of a real uvicorn serving a private copy of the index."""
    index = tmp_path_factory.mktemp("fuzz") / "index"
    shutil.copytree(settings.index, index)
    overrides = {"index": index, "api_key": API_KEY, "max_tokens_cap": 16, "max_queue": 64}
    app = create_app(make_settings(**{**settings.model_dump(), **overrides}))
    # A real server, not schemathesis' in-process ASGI calls: its pytest plugin ends an ASGI app's
    # lifespan after every test, and a module's app would then reload its models and index under
    # the next test's requests. Over loopback the lifespan runs once, and a reset connection shows.
    with live_server(app) as base:
        yield schemathesis.openapi.from_url(f"{base}/openapi.json"), base


def test_every_route_is_fuzzed():
    fuzzed = {(method, path) for method, path, _mode in OPERATIONS}
    assert ("POST", "/v1/completions", GenerationMode.NEGATIVE) in OPERATIONS
    assert len(fuzzed) == sum(len(methods) for methods in SPEC["paths"].values()) >= 10


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_no_operation_answers_a_server_error(served, method, path, mode):
    schema, base = served
    operation = schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode, headers=AUTH))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers_below_500(case):
        response = case.call(base_url=base, timeout=30)
        case.validate_response(response, checks=[not_a_server_error])

    answers_below_500()
