"""The build-time JSON twin of the shipped policy: used only when it was made from exactly the YAML beside it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from bulwark.policy import PolicyError, default_policy_path, load_policy_file, parse_policy
from bulwark.policy_twin import twin_path, write_twin


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    policy = tmp_path / "policy.yaml"
    shutil.copy(default_policy_path(), policy)
    return policy


def test_the_twin_gives_the_same_policy_without_a_yaml_parser(shipped: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = parse_policy(shipped.read_text(), str(shipped))
    assert write_twin(shipped)
    monkeypatch.setitem(sys.modules, "yaml", None)  # importing yaml now fails: the twin must be enough
    assert load_policy_file(shipped) == expected


def test_an_edited_policy_is_never_shadowed_by_a_stale_twin(shipped: Path) -> None:
    assert write_twin(shipped)
    edited = shipped.read_text().replace("roles:", "roles:\n  auditor:\n    models: []\n    routes: [models]\n", 1)
    shipped.write_text(edited)
    assert "auditor" in load_policy_file(shipped).roles


def test_an_invalid_policy_is_reported_with_its_line_even_with_a_twin(shipped: Path) -> None:
    shipped.write_text(shipped.read_text() + "\nunknown_section: true\n")
    assert write_twin(shipped)
    with pytest.raises(PolicyError, match=r"policy.yaml:\d+: unknown_section"):
        load_policy_file(shipped)


def test_a_document_that_is_not_plain_json_gets_no_twin(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("when: 2026-11-25\n")  # a YAML date
    assert not write_twin(policy)
    assert not twin_path(policy).exists()
