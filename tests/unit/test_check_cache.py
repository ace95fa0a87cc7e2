"""The deployment checks' runner and result cache: bulwark_dev.check_cache (the key) and scripts/parallel_checks.sh
(side by side, output in a fixed order, a pass replayed only while its key holds).

The key tests change one input at a time and expect a new key; the runner tests source the real shell library into
bash with small check functions (the real tools take a minute; what is under test here is the runner around them).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bulwark_dev.check_cache import check_key

ROOT = Path(__file__).resolve().parents[2]
COMMAND = "cfn_lint () { cfn-lint template.yaml; }"


def _venv(root: Path, *dists: str) -> Path:
    site = root / "lib" / "python3.13" / "site-packages"
    site.mkdir(parents=True)
    (root / "pyvenv.cfg").write_text("version_info = 3.13.1\n")
    for dist in dists:
        (site / f"{dist}.dist-info").mkdir()
        (site / f"{dist}.dist-info" / "RECORD").write_text(f"{dist}/__init__.py,sha256=abc,10\n")
    return root


def test_the_key_is_stable_and_follows_every_input(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text("Resources: {}\n")
    config = tmp_path / ".cfnlintrc"  # absent at first: creating it must change the key
    code = tmp_path / "code"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "a.py").write_text("x = 1\n")
    venv = _venv(tmp_path / "venv", "cfn_lint-1.2.3")
    environ = {"AWS_DEFAULT_REGION": "us-east-1", "CKV_FRAMEWORK": "cloudformation", "HOME": "/home/a"}

    def key(command: str = COMMAND, env: dict[str, str] | None = None) -> str:
        return check_key(command, [template, config, code], [venv], ["AWS_DEFAULT_REGION"], ["CKV_"], env or environ)

    first = key()
    assert key() == first
    assert key(env={**environ, "HOME": "/home/b"}) == first, "variables not named do not count"

    (code / "pkg" / "__pycache__").mkdir()
    (code / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert key() == first, "bytecode written by an import is not an input"

    seen = {first}
    changes: list[Callable[[], object]] = [
        lambda: template.write_text("Resources: {A: 1}\n"),
        lambda: config.write_text("templates: [template.yaml]\n"),
        lambda: (code / "pkg" / "a.py").write_text("x = 2\n"),
        lambda: (code / "pkg" / "b.py").write_text("y = 1\n"),
        lambda: (venv / "lib/python3.13/site-packages/cfn_lint-1.2.3.dist-info").rename(
            venv / "lib/python3.13/site-packages/cfn_lint-1.2.4.dist-info"
        ),
        lambda: (venv / "lib/python3.13/site-packages/cfn_lint-1.2.4.dist-info/RECORD").write_text("changed\n"),
        lambda: (venv / "pyvenv.cfg").write_text("version_info = 3.13.2\n"),
    ]
    for change in changes:
        change()
        seen.add(key())
    seen.add(key(command=COMMAND.replace("template.yaml", "template.yaml --format json")))
    seen.add(key(env={**environ, "AWS_DEFAULT_REGION": "eu-west-1"}))
    seen.add(key(env={**environ, "CKV_FRAMEWORK": "all"}))
    seen.add(key(env={**environ, "CKV_NEW": "1"}))
    assert len(seen) == len(changes) + 5, "every change gave a key of its own"


def test_the_command_line_reads_the_command_from_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.yaml").write_text("a: 1\n")
    run = subprocess.run(
        [sys.executable, "-m", "bulwark_dev.check_cache", "--file", "t.yaml", "--var", "X"],
        input=COMMAND,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"X": "1", "PYTHONPATH": str(ROOT / "devtools")},
        check=True,
    )
    monkeypatch.chdir(tmp_path)  # paths are read as given, from the project root: here, tmp_path
    assert run.stdout.strip() == check_key(COMMAND, [Path("t.yaml")], [], ["X"], [], {"X": "1"})
    empty = subprocess.run(
        [sys.executable, "-m", "bulwark_dev.check_cache"],
        input="",
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "devtools")},
        check=False,
    )
    assert empty.returncode == 2
    assert "expected on stdin" in empty.stderr


# Checks as check_deploy.sh writes them: a summary line, `fail` on a finding. `slow` finishes last but prints first.
CHECKS = r"""
set -uo pipefail
LOG_DIR=$(mktemp -d "$WORK/log.XXXXXX"); CHECK_RESULTS="$WORK/results"; PY=python
. "$ROOT/scripts/parallel_checks.sh"
slow() { sleep 1; echo "slow ok"; echo ran >>"$WORK/slow.runs"; }
input_check() { echo "input ok: $(cat "$WORK/input")"; echo ran >>"$WORK/input.runs"; }
finding() { echo "finding FAILED: 1 finding"; echo "  E0001 the detail"; fail finding; }
crash() { echo "crash starting"; return 3; }
changes_its_input() { echo "changing ok"; echo more >>"$WORK/input2"; echo ran >>"$WORK/changing.runs"; }
"""


def _run_checks(work: Path, calls: str) -> subprocess.CompletedProcess[str]:
    script = CHECKS + calls + '\nchecks_report\necho "FAILED=${FAILED[*]:-}"\n'
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env={
            "WORK": str(work),
            "ROOT": str(ROOT),
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
            "PYTHONPATH": str(ROOT / "devtools"),
        },
        cwd=work,
        timeout=60,
        check=True,
    )


def test_output_comes_whole_in_the_order_started_and_every_failure_counts(tmp_path: Path) -> None:
    out = _run_checks(tmp_path, "check slow slow\ncheck finding finding\ncheck crash crash").stdout.splitlines()
    assert out == [
        "slow ok",
        "finding FAILED: 1 finding",
        "  E0001 the detail",
        "crash starting",
        "crash: exited 3",
        "FAILED=finding crash (exit 3)",
    ]


def test_a_pass_is_replayed_while_its_inputs_hold_and_rerun_when_they_change(tmp_path: Path) -> None:
    (tmp_path / "input").write_text("one\n")
    call = 'check input cached input_check --file "$WORK/input"'
    assert _run_checks(tmp_path, call).stdout.splitlines()[0] == "input ok: one"
    second = _run_checks(tmp_path, call).stdout.splitlines()[0]
    assert second == "input ok: one (cached: same inputs and tools as a pass)"
    assert (tmp_path / "input.runs").read_text().count("ran") == 1

    (tmp_path / "input").write_text("two\n")
    assert _run_checks(tmp_path, call).stdout.splitlines()[0] == "input ok: two"
    assert (tmp_path / "input.runs").read_text().count("ran") == 2
    assert len(list((tmp_path / "results").iterdir())) == 1, "only the latest pass is kept"

    uncached = _run_checks(tmp_path, "BULWARK_CHECKS_UNCACHED=1\n" + call).stdout.splitlines()[0]
    assert uncached == "input ok: two"
    assert (tmp_path / "input.runs").read_text().count("ran") == 3


def test_a_failure_or_an_input_changed_during_the_run_is_not_kept(tmp_path: Path) -> None:
    for _ in range(2):
        out = _run_checks(tmp_path, 'check finding cached finding --file "$WORK/none"').stdout
        assert "cached" not in out
        assert "FAILED=finding" in out
    for _ in range(2):
        out = _run_checks(tmp_path, 'check changing cached changes_its_input --file "$WORK/input2"').stdout
        assert out.splitlines()[0] == "changing ok"
    assert (tmp_path / "changing.runs").read_text().count("ran") == 2
    assert not (tmp_path / "results").exists()
