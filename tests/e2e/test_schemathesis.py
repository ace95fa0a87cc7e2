"""Property-based fuzzing of the public API (openapi.yaml) against `bulwark local`, with schemathesis.

Given the OpenAPI document and a valid demo key (role developer), when schemathesis generates requests for every
operation (valid and invalid bodies, odd paths and headers), then no response is a 5xx, every response matches the
documented schema (body and headers), and every status code is one the document lists. Bounded: at most
MAX_EXAMPLES per operation, no shrinking deadline.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from tests.e2e.fault_fixtures import ROOT, create_key

pytestmark = pytest.mark.e2e
MAX_EXAMPLES = 50
# The methods the API Gateway emulator's HTTP server dispatches; for any other (TRACE, QUERY, ...) Python's
# http.server answers 501 itself before any Bulwark code runs, which says nothing about Bulwark.
EMULATED_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"})


@pytest.fixture(scope="module")
def fuzz_target(local_stack: Any) -> dict[str, Any]:
    key = create_key(local_stack.env, role="developer", name="schemathesis")
    return {"base_url": local_stack.base_url, "headers": {"Authorization": f"Bearer {key}"}}


@pytest.fixture(scope="module")
def api_schema() -> Any:
    return schemathesis.openapi.from_path(ROOT / "openapi.yaml")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    # schemathesis' lazy runner reads and relabels ``node._nodeid``, an attribute pytest 9's nodes no longer have.
    node: Any = request.node
    if not hasattr(node, "_nodeid"):
        node._nodeid = node.nodeid


# Lazy: the operations' tests are built when the test runs, in the one worker that runs it. Built at collection
# (schemathesis.openapi.from_path + parametrize), every pytest-xdist worker spent ~2.4 s of CPU building them,
# coverage cases included, for a test only one of them runs.
schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_public_api_conforms_to_openapi(case: Any, fuzz_target: dict[str, Any]) -> None:
    if case.method.upper() not in EMULATED_METHODS:
        return
    case.call_and_validate(
        base_url=fuzz_target["base_url"],
        headers=fuzz_target["headers"],
        timeout=30,
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
    )
