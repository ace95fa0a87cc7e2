"""Collection rules for the whole suite, and the DynamoDB Local that a test process shares.

Every test has a node id of its own. Files run longest first (tests/file_order.py), by the durations of the last run,
kept in pytest's cache; with pytest-xdist the controller reads them once and hands them to every worker, so all
workers collect in one order (xdist refuses to run otherwise).

`./dev test` runs pytest on two workers (pytest-xdist), which schedules tests by node id: two items with one id would
make one of them never run, silently. schemathesis 4 under pytest 9 is such a case (tests/e2e/test_schemathesis.py):
each API operation's item carries the operation in its name only, and gets the bare function's id.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from bulwark_dev.local.dynamodb_local import DynamoDBLocal
from tests import file_order

_TIMINGS = pytest.StashKey[file_order.Timings]()


class _TimingRecorder:
    """In the controller (or a run without workers): every report's duration, kept per file at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.reports: list[tuple[str, str, float]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.reports.append((report.nodeid, report.when or "", report.duration))

    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)  # absent with -p no:cacheprovider
        if self.reports and cache is not None:
            seconds, tests = file_order.spent_per_file(self.reports)
            before: file_order.Timings = self.config.stash[_TIMINGS]
            timings = file_order.merged(before, seconds, tests)
            cache.set(file_order.CACHE_KEY, timings)


def pytest_configure(config: pytest.Config) -> None:
    worker_input: dict[str, Any] | None = getattr(config, "workerinput", None)
    if worker_input is not None:  # an xdist worker: the controller's figures, so every worker orders alike
        config.stash[_TIMINGS] = file_order.valid_timings(worker_input.get(file_order.CACHE_KEY))
        return
    cache = getattr(config, "cache", None)  # absent with -p no:cacheprovider
    cached = cache.get(file_order.CACHE_KEY, {}) if cache is not None else {}
    config.stash[_TIMINGS] = file_order.valid_timings(cached)
    config.pluginmanager.register(_TimingRecorder(config), "bulwark-file-timings")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # xdist, in the controller: what each worker starts with
    node.workerinput[file_order.CACHE_KEY] = node.config.stash[_TIMINGS]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    timings: file_order.Timings = config.stash.get(_TIMINGS, {})
    items[:] = file_order.longest_first(items, timings)
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
