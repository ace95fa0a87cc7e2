"""Every function sets its init's objects aside from the cycle collector and collects young objects less often."""

import ast
import subprocess
import sys
from pathlib import Path

from bulwark.api.runtime import GEN0_THRESHOLD
from bulwark_dev.layer_check import parse_module

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


def test_settling_freezes_what_init_made_and_raises_the_young_threshold() -> None:
    # In a child process: the test run's own collector is left alone.
    code = (
        "import gc\nfrom bulwark.api.runtime import settle_after_init\nsettle_after_init()\n"
        "print(gc.get_freeze_count() > 1000, *gc.get_threshold())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    frozen, gen0, gen1, gen2 = out.split()
    assert frozen == "True"
    assert (int(gen0), int(gen1), int(gen2)) == (GEN0_THRESHOLD, 10, 10)


def test_every_function_settles_at_the_end_of_its_init() -> None:
    apps = sorted(FUNCTIONS.glob("*/app.py"))
    assert len(apps) == 4
    for app in apps:
        body = parse_module(app).body
        calls = [
            i
            for i, node in enumerate(body)
            if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", "") == "settle_after_init"
        ]
        services = [i for i, node in enumerate(body) if isinstance(node, ast.Assign) and "service" in ast.unparse(node)]
        assert calls and services and calls[0] > max(services), app  # after the service (and its clients) is built
