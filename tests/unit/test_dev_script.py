"""`./dev` on a machine that lacks something: it names everything missing at once, before downloading anything.

Each test runs the real script with a PATH holding only the basic tools it uses, plus the interpreter, Java and npm
that the case provides (an old Java is a tiny script printing what Java 11 prints for `java -version`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASICS = ("bash", "env", "dirname", "sed", "cat", "head", "cut", "mktemp", "rm", "mkdir")


def _bin(tmp_path: Path, *, python: bool, java: str | None, npm: bool) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in BASICS:
        found = shutil.which(tool)
        assert found is not None, tool
        (folder / tool).symlink_to(found)
    if python:
        (folder / "python3").symlink_to(sys.executable)
    if java == "real":
        real = shutil.which("java")
        if real is None:
            pytest.skip("no java on this machine")
        (folder / "java").symlink_to(real)
    elif java is not None:
        (folder / "java").write_text(f"#!/bin/sh\necho '{java}' >&2\n")
        (folder / "java").chmod(0o755)
    if npm:
        real_npm, real_node = shutil.which("npm"), shutil.which("node")
        if real_npm is None or real_node is None:
            pytest.skip("no npm on this machine")
        (folder / "npm").symlink_to(real_npm)
        (folder / "node").symlink_to(real_node)
    return folder


def _run(tmp_path: Path, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": str(folder),
        "HOME": str(tmp_path / "home"),
        "BULWARK_CACHE_DIR": str(tmp_path / "cache"),  # no DynamoDB Local cached: npm is needed
        "TMPDIR": str(tmp_path),
    }
    return subprocess.run(
        [str(folder / "bash"), str(ROOT / "dev"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_everything_missing_is_listed_at_once(tmp_path: Path) -> None:
    result = _run(tmp_path, _bin(tmp_path, python=False, java=None, npm=False), "local")
    assert result.returncode == 1
    assert "this machine is missing:" in result.stderr
    assert "Python 3.11 or newer" in result.stderr
    assert "Java 17+ for DynamoDB Local (e.g. apt-get install openjdk-17-jre-headless)" in result.stderr
    assert "Node.js 18+ with npm" in result.stderr
    assert not (tmp_path / "cache").exists(), "nothing is downloaded before the prerequisites are there"


def test_an_old_java_is_named_with_its_version(tmp_path: Path) -> None:
    old = 'openjdk version "11.0.22" 2024-01-16'
    result = _run(tmp_path, _bin(tmp_path, python=True, java=old, npm=True), "test")
    assert result.returncode == 1
    assert f"Java 17+ for DynamoDB Local; `java -version` says: {old}" in result.stderr
    assert "Python" not in result.stderr
    assert "npm" not in result.stderr


def test_java_8_reads_as_8_not_1(tmp_path: Path) -> None:
    result = _run(tmp_path, _bin(tmp_path, python=True, java='java version "1.8.0_392"', npm=True), "local")
    assert result.returncode == 1
    assert '`java -version` says: java version "1.8.0_392"' in result.stderr


def test_npm_is_not_needed_once_dynamodb_local_is_cached(tmp_path: Path) -> None:
    version = next(
        line.split('"')[1]
        for line in (ROOT / "devtools/bulwark_dev/local/dynamodb_local.py").read_text().splitlines()
        if line.startswith("NPM_VERSION = ")
    )
    cached = tmp_path / "cache" / "dynamodb-local" / version
    cached.mkdir(parents=True)
    (cached / ".bulwark-complete").write_text("test\n")
    # No Python either, so the script stops at the prerequisites whatever else this machine has.
    result = _run(tmp_path, _bin(tmp_path, python=False, java="real", npm=False), "local")
    assert result.returncode == 1
    assert "Python 3.11 or newer" in result.stderr
    assert "npm" not in result.stderr
    assert "Java" not in result.stderr


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = _run(tmp_path, _bin(tmp_path, python=False, java=None, npm=False))
    assert result.returncode == 0
    for command in ("./dev local", "./dev test", "./dev bench", "./dev lock"):
        assert command in result.stdout
    assert os.access(ROOT / "dev", os.X_OK)
