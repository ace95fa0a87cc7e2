"""Collection rules for the whole suite, and the DynamoDB Local that a test process shares.

Every test has a node id of its own.

`./dev test` runs pytest on two workers (pytest-xdist), which schedules tests by node id: two items with one id would
make one of them never run, silently. schemathesis 4 under pytest 9 is such a case (tests/e2e/test_schemathesis.py):
each API operation's item carries the operation in its name only, and gets the bare function's id.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator

import pytest

from bulwark_dev.local.dynamodb_local import DynamoDBLocal


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and item.nodeid.endswith("::" + item.originalname):
            label = item.name.removeprefix(item.originalname)
            if label.startswith("[") and label.endswith("]"):
                item._id = item._id.with_params(label[1:-1])  # the operation, as its name already says
    repeated = sorted(nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1)
    if repeated:
        raise pytest.UsageError(f"tests share a node id, so a parallel run would skip all but one: {repeated}")


@pytest.fixture(scope="session")
def shared_dynamodb() -> Iterator[DynamoDBLocal]:
    """One DynamoDB Local for every stack and integration test of this process (each pytest worker has its own),
    started on first use. A stack given it keeps its tables in a database of its own there (LocalStack's `dynamodb`),
    so stacks stay as isolated as with a JVM each, without starting one each (~2 s of CPU and a cold JIT every time).
    Tests that stop or pause DynamoDB Local start their own."""
    process = DynamoDBLocal(progress=sys.stderr)
    process.start()
    try:
        yield process
    finally:
        process.stop()
