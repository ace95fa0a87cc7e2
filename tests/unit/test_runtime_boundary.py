"""The runtime package ships alone in the Lambda layer: nothing in it, or in a handler, may import the development
package (bulwark_dev: CLI, local stack), which is never copied into the layer. The janitor once did, and would have
failed to import on its first run in AWS."""

from __future__ import annotations

import ast
from pathlib import Path

from bulwark_dev.layer_check import parse_module

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = [*sorted((ROOT / "layers/bulwark/bulwark").rglob("*.py")), *sorted((ROOT / "functions").glob("*/app.py"))]


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(parse_module(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_runtime_module_imports_the_development_package() -> None:
    assert len(RUNTIME) > 50  # the walk found the package
    offenders = {
        str(path.relative_to(ROOT)): sorted(n for n in _imported(path) if n.split(".")[0] == "bulwark_dev")
        for path in RUNTIME
    }
    assert {path: names for path, names in offenders.items() if names} == {}
