"""Longest files first: the order `./dev test` hands test files to its workers (tests/conftest.py).

pytest-xdist's `--dist loadfile` gives each worker whole files, in the order it is given them (with
`--no-loadscope-reorder`; by default it orders them by number of tests, which put the two slowest files, each a single
test, last: two workers sat idle for the last ~35 s of a run). Longest processing time first is the classic rule for
finishing parallel work early, so files are ordered by how long each took on the last run that ran all of its tests,
kept in pytest's cache. A file never timed gets its folder's typical cost, so a first run starts the end-to-end files
(the long ones) first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

CACHE_KEY = "bulwark/seconds_per_file"
# What a file never timed is assumed to cost, by folder: e2e files start a stack or use one; unit files are quick.
DEFAULT_SECONDS = {"tests/e2e/": 20.0, "tests/integration/": 5.0}
UNIT_SECONDS = 1.0

# file -> [seconds, tests that ran]: the figure of the last run that ran at least as many of its tests.
Timings = dict[str, list[float]]


class _Item(Protocol):
    @property
    def nodeid(self) -> str: ...


ItemT = TypeVar("ItemT", bound=_Item)


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def expected_seconds(path: str, timings: Mapping[str, Sequence[float]]) -> float:
    if path in timings:
        return float(timings[path][0])
    return next((seconds for folder, seconds in DEFAULT_SECONDS.items() if path.startswith(folder)), UNIT_SECONDS)


def longest_first(items: Sequence[ItemT], timings: Mapping[str, Sequence[float]]) -> list[ItemT]:
    """The items with their files ordered longest first; each file's items keep their order (and ties their files')."""
    by_file: dict[str, list[ItemT]] = {}
    for item in items:
        by_file.setdefault(file_of(item.nodeid), []).append(item)
    ordered = sorted(by_file, key=lambda path: -expected_seconds(path, timings))  # stable: ties keep collection order
    return [item for path in ordered for item in by_file[path]]


def merged(previous: Mapping[str, Sequence[float]], seconds: Mapping[str, float], tests: Mapping[str, int]) -> Timings:
    """The cache after a run: a file's figure is replaced only by a run that ran at least as many of its tests (a run
    of one test of a file says little about the whole file)."""
    out: Timings = {path: [float(value[0]), float(value[1])] for path, value in previous.items() if len(value) == 2}
    for path, spent in seconds.items():
        ran = tests.get(path, 0)
        if path not in out or ran >= out[path][1]:
            out[path] = [round(spent, 2), float(ran)]
    return out


def valid_timings(raw: object) -> Timings:
    """What the cache holds, if it has the expected shape (anything else counts as no timings)."""
    if not isinstance(raw, dict):
        return {}
    out: Timings = {}
    for path, value in raw.items():
        shaped = isinstance(path, str) and isinstance(value, list) and len(value) == 2
        if shaped and all(isinstance(v, int | float) for v in value):
            out[path] = [float(value[0]), float(value[1])]
    return out


def spent_per_file(reports: Iterable[tuple[str, str, float]]) -> tuple[dict[str, float], dict[str, int]]:
    """(nodeid, phase, duration) of each report -> seconds per file (every phase) and tests per file (each test has
    one setup report, skipped ones included)."""
    seconds: dict[str, float] = {}
    tests: dict[str, int] = {}
    for nodeid, phase, duration in reports:
        path = file_of(nodeid)
        seconds[path] = seconds.get(path, 0.0) + duration
        if phase == "setup":
            tests[path] = tests.get(path, 0) + 1
    return seconds, tests
