"""Every Bulwark benchmark, one command: `./dev bench` (or `python bench/run_all.py`). Prints markdown tables on
stdout, progress on stderr; starts and stops everything it needs (DynamoDB Local, the local stack); a few minutes on a
2-core machine. Not a pass/fail check: each section prints its targets next to the measured figures.

Options: --quick (fewer samples, for a smoke run), --only NAME[,NAME] (authorizer, limiter, path, cold, validator,
jwt, guardrails, streaming; and frontdoor, not in the default set: a fresh clone to the first completion, about a
minute more).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, say

SECTIONS = ("authorizer", "limiter", "path", "streaming", "cold", "validator", "jwt", "guardrails")
OPTIONAL = ("frontdoor",)  # minutes of installs from the package index: only when asked for


def _script(name: str, *args: str, heading: str, timeout: float = 300) -> str:
    """Run another helper's benchmark script as written and return its output under a heading."""
    path = ROOT / "bench" / name
    proc = subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return f"{heading}\n\nnot run: `{name}` exited {proc.returncode}: " + " / ".join(tail)
    return f"{heading}\n\n{proc.stdout.strip()}"


def _optional_sections(only: set[str], section: Callable[[str, Callable[[], str]], None]) -> None:
    """The sections outside the default set, each only when named in --only."""
    if "frontdoor" in only:
        # The test command's timing (minutes, twice) is left to `python bench/front_door.py` run on its own.
        section(
            "frontdoor",
            lambda: _script(
                "front_door.py",
                "--skip-test",
                "--no-title",
                heading="### Front door (bench/front_door.py --skip-test)",
                timeout=1200,
            ),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help="comma-separated subset of " + ", ".join(SECTIONS + OPTIONAL)
    )
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SECTIONS + OPTIONAL)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    quick = args.quick
    started = time.monotonic()
    out: list[str] = [
        "## Bulwark benchmarks",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · {platform.machine()}, {os.cpu_count()} cores · "
        f"Python {platform.python_version()} · {platform.system()} {platform.release()}"
        + (" · **--quick**" if quick else ""),
    ]

    def section(title: str, fn: Callable[[], str]) -> None:
        t0 = time.monotonic()
        say(f"== {title}")
        try:
            text = fn()
        except Exception as exc:  # one broken section must not hide the others
            text = f"### {title}\n\nfailed: {type(exc).__name__}: {exc}"
        say(f"== {title}: {time.monotonic() - t0:.0f} s")
        print("\n" + text, flush=True)

    print("\n".join(out), flush=True)

    if only & {"authorizer", "limiter"}:
        from bulwark_dev.local.dynamodb_local import DynamoDBLocal, create_tables
        from bulwark_dev.local.template_model import load_template

        template = load_template(ROOT / "template.yaml")
        say("starting DynamoDB Local for the in-process benchmarks")
        with DynamoDBLocal(progress=sys.stderr) as ddb:
            create_tables(ddb.client(), template.tables, template.table_names)
            if "authorizer" in only:
                import bench_authorizer

                section(
                    "authorizer",
                    lambda: bench_authorizer.run(ddb.endpoint_url, template.table_names, 500 if quick else 2000),
                )
            if "limiter" in only:
                import bench_limiter

                counters = template.table_names["CountersTable"]
                section("limiter", lambda: bench_limiter.run(ddb.endpoint_url, counters, 1.0 if quick else 3.0))
    _stack_sections(only, quick, section)
    if "cold" in only:
        import bench_cold_start

        section("cold start", lambda: bench_cold_start.run(3 if quick else 7))
    if "validator" in only:
        section(
            "validator",
            lambda: _script(
                "validator_bench.py",
                heading="### Validator: parse + validate + sanitize + guardrails (bench/validator_bench.py)\n\n"
                "Target: a maximum-size request at the configured caps (a 1 MiB body; by default at most 200,000 "
                "characters of message text) validated and sanitized in under 50 ms p99.",
            ),
        )
    if "jwt" in only:
        section(
            "jwt",
            lambda: _script(
                "authorizer_jwt_bench.py",
                "--n",
                "300" if quick else "2000",
                heading="### JWT verification, warm JWKS (bench/authorizer_jwt_bench.py)",
            ),
        )
    if "guardrails" in only:
        section(
            "guardrails",
            lambda: _script(
                "guardrail_eval.py",
                heading="### Prompt-injection detector on public attack and benign sets (bench/guardrail_eval.py)",
            ),
        )
    _optional_sections(only, section)
    say(f"all benchmarks done in {time.monotonic() - started:.0f} s")


def _stack_sections(only: set[str], quick: bool, section: Callable[[str, Callable[[], str]], None]) -> None:
    """The sections that start the whole local stack."""
    if "path" in only:
        import bench_local_path

        section("full local path", lambda: bench_local_path.run(100 if quick else 300))
    if "streaming" in only:
        import bench_streaming

        # The full run holds one stream for 10 minutes to show memory stays flat; --quick for one minute.
        section("streaming", lambda: bench_streaming.run(5 if quick else 30, 60.0 if quick else 600.0))


if __name__ == "__main__":
    main()
