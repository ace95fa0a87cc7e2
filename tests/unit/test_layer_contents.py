"""Only what runs ships, and every import is declared: the runtime package, the layer's requirements and pyproject.toml.

The deployment checks run `bulwark_dev.layer_check` on what `sam build` makes (tests/unit/test_layer_build_check.py
shows it failing on builds that break each rule); these tests hold the same rules on the source tree (no build
needed) and import every handler with what its layers do not ship made unimportable: the development-only packages,
JwtLayer's packages for every function but the authorizer, and the Powertools modules the layer build prunes.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

from bulwark_dev.layer_check import RUNTIME_PROVIDED, Closure, package_modules, parse_module, runtime_closure

ROOT = Path(__file__).resolve().parents[2]
LAYER_SOURCE = ROOT / "layers" / "bulwark"
FUNCTIONS = ROOT / "functions"
HANDLERS = sorted(FUNCTIONS.glob("*/app.py"))
# Import names whose distribution is named otherwise and may not be installed (the optional `train` extra).
KNOWN_DISTRIBUTIONS = {"sklearn": "scikit-learn", "nanoguard": "metatronnanoguard"}  # import name -> distribution
SCANNED = ("layers/bulwark/bulwark", "functions", "devtools", "tests", "bench")


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


@cache
def _closure() -> Closure:
    return runtime_closure(LAYER_SOURCE, HANDLERS)


@cache
def _installed() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


@cache
def _local_modules() -> frozenset[str]:
    """The project's own top-level names (test helpers such as `audit_session`, bench scripts), not dependencies."""
    return frozenset({p.stem for f in SCANNED for p in (ROOT / f).rglob("*.py")} | {"bulwark", "bulwark_dev", "tests"})


def _distribution(module: str) -> str:
    found = _installed().get(module)
    return _name(found[0] if found else KNOWN_DISTRIBUTIONS.get(module, module))


def _layer_requirements(name: str = "requirements*.txt") -> set[str]:
    """What the layers' requirements files list (both layers by default: BulwarkLayer's and JwtLayer's)."""
    lines = [line for path in LAYER_SOURCE.glob(name) for line in path.read_text(encoding="utf-8").splitlines()]
    return {_name(line) for line in lines if line.strip() and not line.lstrip().startswith(("#", "-"))}


def _third_party_imports(folder: Path) -> set[str]:
    """Top-level names imported anywhere under `folder`, minus the standard library and the project's own modules."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(parse_module(path)):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in _local_modules()}


def test_the_handlers_reach_every_runtime_module_and_never_the_development_package() -> None:
    closure = _closure()
    assert closure.dev_imports == set()
    assert package_modules(LAYER_SOURCE) - closure.modules == set()
    assert len(closure.modules) > 50  # the closure really was followed, not stopped at the handlers


def test_the_layer_requirements_are_exactly_what_the_functions_import() -> None:
    closure = _closure()
    imported = {_distribution(top) for top in closure.third_party - RUNTIME_PROVIDED}
    assert imported == _layer_requirements()
    assert "aws-xray-sdk" not in _layer_requirements()  # the lean provider records traces; nothing imports the SDK


def test_only_the_authorizer_imports_what_the_jwt_layer_holds() -> None:
    jwt_layer = _layer_requirements("requirements-jwt.txt")
    assert jwt_layer == {"pyjwt", "cryptography"}
    for handler in HANDLERS:
        imported = {_distribution(top) for top in runtime_closure(LAYER_SOURCE, [handler]).third_party}
        assert bool(imported & jwt_layer) == (handler.parent.name == "authorizer"), handler


def test_every_import_of_the_project_is_declared_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_name(r) for r in project["dependencies"]}
    declared |= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    for folder in SCANNED:
        undeclared = {_distribution(top) for top in _third_party_imports(ROOT / folder)} - declared
        assert undeclared == set(), f"{folder} imports undeclared {sorted(undeclared)}"
    runtime = {_name(r) for r in project["dependencies"]}
    assert _layer_requirements() <= runtime  # pyproject's runtime list covers the layer's


BLOCKED = ("aws_xray_sdk", "bulwark_dev", "boto3", "botocore", "yaml")
JWT_LAYER = ("jwt", "cryptography")  # JwtLayer: the authorizer's only
IMPORT_HANDLERS = """
import importlib.util, pathlib, re, sys
makefile = pathlib.Path(MAKEFILE).read_text()
kept = re.search(r"^POWERTOOLS_UTILITIES_KEPT = (.*)$", makefile, re.M).group(1).split()
assert "rm -rf \\"$(SITE)/aws_lambda_powertools/event_handler\\"" in makefile
class Block:
    def find_spec(self, name, path=None, target=None):
        parts = name.split(".")
        if parts[0] in BLOCKED:
            raise ImportError("not in the layer: " + name)
        # What layers/bulwark/Makefile prunes from Powertools.
        if parts[:2] == ["aws_lambda_powertools", "event_handler"] or (
            parts[:2] == ["aws_lambda_powertools", "utilities"] and len(parts) > 2 and parts[2] not in kept
            and parts[2] != "serialization"
        ):
            raise ImportError("pruned from the layer: " + name)
sys.meta_path.insert(0, Block())
for i, path in enumerate(sys.argv[1:]):
    spec = importlib.util.spec_from_file_location(f"app_{i}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.lambda_handler)
print("imported", len(sys.argv) - 1)
"""


@pytest.mark.parametrize("handler", HANDLERS, ids=lambda h: h.parent.name)
def test_every_handler_imports_without_the_packages_its_layers_do_not_ship(handler: Path) -> None:
    # Tracing disabled, as under `sam local invoke`: Powertools would reach for the X-Ray SDK there.
    env = {
        **os.environ,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "BULWARK_KEYS_TABLE": "keys",
        "BULWARK_COUNTERS_TABLE": "counters",
        "BULWARK_INVOKER_FUNCTION": "invoker",
        # The template sets both; without them the validator and invoker refuse to start (fail closed).
        "BULWARK_IDEMPOTENCY_TABLE": "idempotency",
        "BULWARK_INVOKER_MAC_KEY": "arn:aws:kms:us-east-1:000000000000:key/test",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    blocked = BLOCKED if handler.parent.name == "authorizer" else BLOCKED + JWT_LAYER
    code = f"BLOCKED = {blocked!r}\nMAKEFILE = {str(LAYER_SOURCE / 'Makefile')!r}\n{IMPORT_HANDLERS}"
    done = subprocess.run(
        [sys.executable, "-c", code, str(handler)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "imported 1"
