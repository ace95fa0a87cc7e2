"""The order test files are handed to workers: longest first, by the last full run's durations (tests/file_order.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.file_order import expected_seconds, longest_first, merged, spent_per_file, valid_timings


@dataclass(frozen=True)
class Item:
    nodeid: str


ITEMS = [
    Item("tests/unit/test_a.py::test_1"),
    Item("tests/unit/test_a.py::test_2"),
    Item("tests/e2e/test_soak.py::test_soak"),
    Item("tests/integration/test_db.py::test_x"),
    Item("tests/e2e/test_keys.py::test_1"),
    Item("tests/e2e/test_keys.py::test_2"),
]


def test_a_first_run_starts_the_end_to_end_files_then_integration_then_unit_keeping_collection_order() -> None:
    ordered = [item.nodeid for item in longest_first(ITEMS, {})]
    assert ordered == [
        "tests/e2e/test_soak.py::test_soak",
        "tests/e2e/test_keys.py::test_1",
        "tests/e2e/test_keys.py::test_2",
        "tests/integration/test_db.py::test_x",
        "tests/unit/test_a.py::test_1",
        "tests/unit/test_a.py::test_2",
    ]


def test_timed_files_go_by_their_time_and_each_file_keeps_its_tests_together_in_order() -> None:
    timings = {"tests/unit/test_a.py": [40.0, 2.0], "tests/e2e/test_keys.py": [3.0, 2.0]}
    ordered = [item.nodeid for item in longest_first(ITEMS, timings)]
    assert ordered == [
        "tests/unit/test_a.py::test_1",
        "tests/unit/test_a.py::test_2",
        "tests/e2e/test_soak.py::test_soak",  # never timed: an e2e file's default, 20 s
        "tests/integration/test_db.py::test_x",
        "tests/e2e/test_keys.py::test_1",
        "tests/e2e/test_keys.py::test_2",
    ]
    assert expected_seconds("tests/unit/new.py", timings) == 1.0


def test_a_run_of_fewer_tests_of_a_file_does_not_replace_its_figure() -> None:
    seconds, tests = spent_per_file(
        [
            ("tests/e2e/test_keys.py::test_1", "setup", 2.0),
            ("tests/e2e/test_keys.py::test_1", "call", 1.0),
            ("tests/e2e/test_keys.py::test_1", "teardown", 0.5),
            ("tests/unit/test_a.py::test_1", "setup", 0.1),  # skipped at setup: still one test of the file
        ]
    )
    assert seconds == {"tests/e2e/test_keys.py": 3.5, "tests/unit/test_a.py": 0.1}
    assert tests == {"tests/e2e/test_keys.py": 1, "tests/unit/test_a.py": 1}
    before = {"tests/e2e/test_keys.py": [30.0, 2.0], "tests/unit/test_a.py": [0.5, 1.0]}
    after = merged(before, seconds, tests)
    assert after["tests/e2e/test_keys.py"] == [30.0, 2.0]  # one of its two tests ran: the old figure stays
    assert after["tests/unit/test_a.py"] == [0.1, 1.0]  # all of it ran: the new figure


def test_a_cache_of_another_shape_counts_as_none() -> None:
    assert valid_timings(None) == {}
    assert valid_timings({"a.py": "fast", "b.py": [1, 2, 3], 3: [1, 1]}) == {}
    assert valid_timings({"a.py": [1, 2]}) == {"a.py": [1.0, 2.0]}
