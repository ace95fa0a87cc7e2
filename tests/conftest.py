"""Collection rules for the whole suite: every test has a node id of its own.

`./dev test` runs pytest on two workers (pytest-xdist), which schedules tests by node id: two items with one id would
make one of them never run, silently. schemathesis 4 under pytest 9 is such a case (tests/e2e/test_schemathesis.py):
each API operation's item carries the operation in its name only, and gets the bare function's id.
"""

from __future__ import annotations

from collections import Counter

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and item.nodeid.endswith("::" + item.originalname):
            label = item.name.removeprefix(item.originalname)
            if label.startswith("[") and label.endswith("]"):
                item._id = item._id.with_params(label[1:-1])  # the operation, as its name already says
    repeated = sorted(nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1)
    if repeated:
        raise pytest.UsageError(f"tests share a node id, so a parallel run would skip all but one: {repeated}")
