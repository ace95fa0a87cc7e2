"""The front door, timed as a new user meets it: clone, `./dev local`, first completion; then `./dev test`.

Each run starts from a fresh `git clone` of this repository (committed state) into a temporary folder, with an empty
home directory and empty pip, uv and npm caches, so nothing an earlier run downloaded is reused. Then:

1. `./dev local --port 0`: time to the printed demo key, then one completion sent with `requests` (time to its 200),
   then the stack is stopped by its PID (SIGTERM, as Ctrl-C would).
2. Unless --skip-test: `./dev test [--test-args ...]` in another fresh clone with its own empty home (the "fresh
   clone" figure), then once more in the same clone (the "second run" figure). Phases are timed from the `== ` lines.

    python bench/front_door.py                       # everything (the test command runs twice: minutes)
    python bench/front_door.py --skip-test           # clone to first completion only (about a minute)
    python bench/front_door.py --baseline 4ec45af    # the same for an older commit, side by side with ratios
    python bench/front_door.py --test-args tests/unit # time the test command on a subset of the tests

Markdown on stdout, progress on stderr. Only 127.0.0.1 is called (and the package registries, by the scripts).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, say, table

KEY_LINE = re.compile(r"Demo API key \(role [\w-]+\):\s+(\S+)")
URL_LINE = re.compile(r"Bulwark is running at (http://\S+)")
# Progress lines of `./dev` and `bulwark local` worth a row, matched anywhere in a line.
MILESTONES = {
    "uv installed": "installing Python packages into .venv",
    "Python packages installed": "Python packages ready",
    "DynamoDB Local fetched": "DynamoDB Local ready",
    "stack ready": "Local stack ready",
}


@dataclass
class Run:
    label: str
    rev: str
    marks: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def fresh_env(home: Path, caches: Path) -> dict[str, str]:
    """This process's environment less anything pointing at an existing venv or cache, with an empty home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "BULWARK_", "VIRTUAL_ENV", "PYTHONPATH"))}
    if sys.prefix != sys.base_prefix:  # drop the benchmark's own venv from PATH
        own = str(Path(sys.prefix) / "bin")
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != own)
    env.pop("XDG_CACHE_HOME", None)
    env.update(
        HOME=str(home),
        PIP_CACHE_DIR=str(caches / "pip"),
        UV_CACHE_DIR=str(caches / "uv"),
        npm_config_cache=str(caches / "npm"),
    )
    return env


def clone(rev: str, into: Path) -> float:
    started = time.monotonic()
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(ROOT), str(into)], check=True)
    subprocess.run(["git", "-C", str(into), "checkout", "-q", rev], check=True)
    return time.monotonic() - started


def time_local(run: Run, work: Path, timeout: float) -> None:
    home, repo = work / "home", work / "repo"
    home.mkdir(parents=True)
    env = fresh_env(home, work / "caches")
    t0 = time.monotonic()
    run.marks["cloned"] = clone(run.rev, repo)
    say(f"{run.label}: cloned {run.rev} in {run.marks['cloned']:.1f} s; ./dev local with an empty home ...")
    proc = subprocess.Popen(
        ["./dev", "local", "--port", "0"],
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own group: a Ctrl-C here does not reach it before we stop it by PID
    )
    found: dict[str, str] = {}
    ready = threading.Event()
    tail: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic() - t0
            tail.append(line.rstrip())
            del tail[:-30]
            for name, needle in MILESTONES.items():
                if needle in line and name not in run.marks:
                    run.marks[name] = now
            if (url := URL_LINE.search(line)) is not None:
                found["url"] = url.group(1)
            if (key := KEY_LINE.search(line)) is not None:
                found["key"] = key.group(1)
                run.marks["key printed"] = now
                ready.set()
        ready.set()  # the process ended (without a key, if none was seen)

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(timeout) or "key" not in found:
            raise RuntimeError(f"{run.label}: no demo key within {timeout:.0f} s; last output:\n" + "\n".join(tail))
        answer = requests.post(
            found["url"] + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {found['key']}"},
            json={"model": "demo-echo", "messages": [{"role": "user", "content": "Hello"}]},
            timeout=60,
        )
        run.marks["first completion"] = time.monotonic() - t0
        if answer.status_code != 200:
            run.notes.append(f"first completion answered {answer.status_code}: {answer.text[:200]}")
        say(
            f"{run.label}: key at {run.marks['key printed']:.1f} s, completion at {run.marks['first completion']:.1f} s"
        )
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the stack's PID (it stops its children in order), SIGKILL if it has not gone in 30 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def time_test(run: Run, work: Path, test_args: list[str], timeout: float) -> None:
    home, repo = work / "home-test", work / "repo-test"
    home.mkdir(parents=True)
    env = fresh_env(home, work / "caches-test")
    run.marks["test fresh clone: clone"] = clone(run.rev, repo)
    for attempt in ("fresh clone", "second run"):
        say(f"{run.label}: ./dev test {' '.join(test_args)} ({attempt}) ...")
        started = time.monotonic()
        phases: dict[str, float] = {}
        proc = subprocess.Popen(
            ["./dev", "test", *test_args],
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert proc.stdout is not None
        output: list[str] = []  # all of it: a failure's traceback is kept outside the temporary clone
        try:
            for line in proc.stdout:
                output.append(line.rstrip())
                if line.startswith("== "):
                    phases[line[3:].strip()] = time.monotonic() - started
            rc = proc.wait(timeout)
        finally:
            stop(proc)
        total = time.monotonic() - started
        if rc != 0:
            kept = Path(tempfile.gettempdir()) / f"front-door-{run.rev}-{attempt.replace(' ', '-')}.log"
            kept.write_text("\n".join(output) + "\n", encoding="utf-8")
            errors = [line for line in output if line.startswith("E ")][:3]
            summary = " / ".join([line for line in output if line.strip()][-3:] + errors)
            run.notes.append(f"`./dev test` ({attempt}) exited {rc}: {summary} (whole output: {kept})")
        order = ["ruff", "mypy", "pytest", "deployment checks"]
        points = [("setup", 0.0)] + [(p, phases[p]) for p in order if p in phases]
        for (name, begin), (_, end) in zip(points, [*points[1:], ("end", total)], strict=True):
            run.marks[f"test {attempt}: {name}"] = end - begin
        run.marks[f"test {attempt}: whole command"] = total + run.marks.get(f"test {attempt}: clone", 0.0)
        parts = ", ".join(f"{name} {run.marks[f'test {attempt}: {name}']:.0f} s" for name, _ in points)
        say(f"{run.label}: ./dev test ({attempt}) took {total:.0f} s (exit {rc}): {parts}")


# Local rows are times since `git clone` started (the clone row: how long the clone took); test rows are durations.
ROWS = [
    ("clone (its own duration)", "cloned", ""),
    ("`./dev local`: uv ready, Python install started", "uv installed", ""),
    ("`./dev local`: Python packages installed", "Python packages installed", ""),
    ("`./dev local`: DynamoDB Local fetched (in parallel)", "DynamoDB Local fetched", ""),
    ("`./dev local`: stack ready", "stack ready", ""),
    ("demo key printed", "key printed", ""),
    ("**first completion answered**", "first completion", "under 45 s"),
]
TEST_ROWS = [
    *[
        (f"`./dev test`, fresh clone: {p}", f"test fresh clone: {p}", "")
        for p in ("clone", "setup", "ruff", "mypy", "pytest", "deployment checks")
    ],
    ("**`./dev test`, fresh clone: clone + whole command**", "test fresh clone: whole command", "under 5 min"),
    *[
        (f"`./dev test`, second run: {p}", f"test second run: {p}", "")
        for p in ("setup", "ruff", "mypy", "pytest", "deployment checks")
    ],
    ("**`./dev test`, second run: whole command**", "test second run: whole command", "under 3 min"),
]


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def report(runs: list[Run], with_tests: bool, test_args: list[str]) -> str:
    rows_spec = ROWS + (TEST_ROWS if with_tests else [])
    headers = [
        "fresh clone, empty home and caches",
        *[f"{r.label} ({r.rev})" for r in runs],
    ]
    if len(runs) == 2:
        headers.append("ratio")
    headers.append("target")
    rows = []
    for title, mark, target in rows_spec:
        values = [r.marks.get(mark) for r in runs]
        if all(v is None for v in values):
            continue
        row = [title, *[fmt(v) for v in values]]
        if len(runs) == 2:
            new, old = values
            row.append(f"{old / new:.1f}x faster" if new and old and mark != "cloned" else "-")
        row.append(target)
        rows.append(row)
    out = [
        table(headers, rows),
        "\n`./dev local` rows: time since `git clone` began (the clone row: its own duration)."
        + (" `./dev test` rows: the duration of each phase, as its `== ` lines divide it." if with_tests else ""),
    ]
    if with_tests and test_args:
        out.append(f"\n`./dev test` ran pytest on `{' '.join(test_args)}` only (not the whole suite).")
    for r in runs:
        out += [f"\n{r.label}: {note}" for note in r.notes]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD", help="commit to clone (default HEAD: commit your work first)")
    parser.add_argument("--baseline", help="also time this older commit, shown beside --rev with ratios")
    parser.add_argument("--skip-test", action="store_true", help="time clone to first completion only")
    parser.add_argument("--test-args", default="", help="arguments for pytest inside `./dev test` (a subset)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed for each step")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clones (their paths are printed)")
    parser.add_argument("--no-title", action="store_true", help="table only (run_all.py prints the heading)")
    args = parser.parse_args()
    test_args = shlex.split(args.test_args)

    def resolve(rev: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True, check=True
        ).stdout.strip()

    runs = [Run("this commit", resolve(args.rev))]
    if args.baseline:
        runs.append(Run("baseline", resolve(args.baseline)))
    started = time.monotonic()
    for run in runs:
        work = Path(tempfile.mkdtemp(prefix=f"bulwark-frontdoor-{run.rev}-"))
        try:
            time_local(run, work, args.timeout)
            if not args.skip_test:
                time_test(run, work, test_args, args.timeout)
        except (RuntimeError, subprocess.SubprocessError, requests.RequestException) as exc:
            run.notes.append(f"failed: {exc}")
        finally:
            if args.keep:
                say(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    say(f"front door timed in {time.monotonic() - started:.0f} s")
    if not args.no_title:
        print(
            "### Front door: fresh clone to first completion"
            + ("" if args.skip_test else ", and the test command")
            + " (bench/front_door.py)\n"
        )
    print(report(runs, not args.skip_test, test_args))


if __name__ == "__main__":
    main()
