"""Only what runs ships: what the Lambda layer holds, checked against what the functions import.

The handlers' import closure, and that of any module an exec wrapper in the layer starts with `python -m` (the
streaming runtime loop AWS_LAMBDA_EXEC_WRAPPER runs instead of the managed runtime's client), is followed statically
(every `import` in a module, lazy ones inside functions included) through the `bulwark` package. The layer fails the
check when it holds the development package (`bulwark_dev`), a `bulwark` module outside that closure, a top-level
package that neither the closure imports nor a needed distribution requires, or when the closure imports a third-party
package the layer lacks (boto3 and botocore excepted: Lambda's python3.13 runtime provides them, and Bulwark uses them
only off the hot path).

    python -m bulwark_dev.layer_check <layer python dir> <functions dir>    (scripts/check_deploy.sh, on `sam build`)
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

RUNTIME_PACKAGE = "bulwark"
DEV_PACKAGE = "bulwark_dev"
# Provided by Lambda's Python runtime; Bulwark imports them only off the hot path (Bedrock, SageMaker, the CLI).
RUNTIME_PROVIDED = frozenset({"boto3", "botocore"})
# How pip names a distribution's requirement (PEP 508): the name, then extras, versions or markers.
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_TARGET = {  # the layer's platform, for requirement markers (layers/bulwark/Makefile builds for it)
    "python_version": "3.13",
    "python_full_version": "3.13.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "platform_machine": "aarch64",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "os_name": "posix",
    "extra": "",
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(path: Path, module: str) -> Iterator[str]:
    """Every module an `import` in `path` may load: `from a import b` yields `a` and `a.b` (b may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)


def _source(root: Path, module: str) -> Path | None:
    path = root.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def package_modules(root: Path, package: str = RUNTIME_PACKAGE) -> set[str]:
    """Every module of `package` under `root` (the directory that holds the package)."""
    found = set()
    for path in (root / package).rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        found.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


@dataclass
class Closure:
    modules: set[str] = field(default_factory=set)  # the runtime package's modules the handlers can load
    third_party: set[str] = field(default_factory=set)  # top-level names of everything else they import
    dev_imports: set[str] = field(default_factory=set)  # runtime modules that import the development package


_EXEC_MODULE = re.compile(rf"\bpython3?(?:\.\d+)?\s+-m\s+({RUNTIME_PACKAGE}(?:\.\w+)+)")


def wrapper_modules(root: Path) -> set[str]:
    """Modules of the runtime package that its exec wrappers (the files without a suffix, such as the script
    AWS_LAMBDA_EXEC_WRAPPER names) start with `python -m`: entry points beside the handlers."""
    found: set[str] = set()
    for path in (root / RUNTIME_PACKAGE).rglob("*"):
        if path.is_file() and not path.suffix and "__pycache__" not in path.parts:
            found.update(_EXEC_MODULE.findall(path.read_text(encoding="utf-8", errors="replace")))
    return found


def runtime_closure(root: Path, handlers: Iterable[Path]) -> Closure:
    """What the handlers and the exec wrappers' modules import, followed through the runtime package under `root`."""
    closure = Closure()
    stdlib = sys.stdlib_module_names
    pending = [(name, "handler") for handler in handlers for name in _imports(handler, "app")]
    pending += [(name, "exec wrapper") for name in sorted(wrapper_modules(root))]
    while pending:
        name, importer = pending.pop()
        top = name.split(".")[0]
        if top == DEV_PACKAGE:
            closure.dev_imports.add(importer)
        if top != RUNTIME_PACKAGE:
            if top and top not in stdlib and top != DEV_PACKAGE:
                closure.third_party.add(top)
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            module = ".".join(parts[:i])
            path = _source(root, module)
            if path is None or module in closure.modules:
                continue
            closure.modules.add(module)
            pending += [(imported, module) for imported in _imports(path, module)]
    return closure


def _marker_holds(marker: str) -> bool:
    from packaging.markers import Marker

    return Marker(marker).evaluate(dict(_TARGET))


def _distributions(layer: Path) -> dict[str, tuple[set[str], set[str]]]:
    """Distribution name -> (its top-level names in the layer, the distributions it requires on the target)."""
    found: dict[str, tuple[set[str], set[str]]] = {}
    for info in layer.glob("*.dist-info"):
        meta = (info / "METADATA").read_text(encoding="utf-8", errors="replace")
        name = _normalise(next(line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Name:")))
        requires = set()
        for line in meta.splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            spec = line.split(":", 1)[1]
            requirement, _, marker = spec.partition(";")
            match = _REQUIREMENT_NAME.match(requirement)
            if match and (not marker.strip() or _marker_holds(marker)):
                requires.add(_normalise(match.group(1)))
        tops = set()
        record = info / "RECORD"
        for line in record.read_text(encoding="utf-8").splitlines() if record.is_file() else []:
            first = line.split(",", 1)[0].split("/", 1)[0]
            if first and not first.endswith((".dist-info", ".data")) and first not in ("..", "__pycache__", "bin"):
                tops.add(first.removesuffix(".py").split(".")[0])
        found[name] = (tops, requires)
    return found


def check_layer(layer: Path, functions: Path) -> list[str]:
    """Problems with the layer directory `layer` (its `python/`), for the handlers in `functions/*/app.py`."""
    problems: list[str] = []
    closure = runtime_closure(layer, sorted(functions.glob("*/app.py")))
    if (layer / DEV_PACKAGE).exists():
        problems.append(f"the layer holds the development package {DEV_PACKAGE}")
    if closure.dev_imports:
        problems.append(f"runtime code imports {DEV_PACKAGE}: {', '.join(sorted(closure.dev_imports))}")
    unreachable = package_modules(layer) - closure.modules
    if unreachable:
        problems.append(f"{RUNTIME_PACKAGE} modules no function imports: {', '.join(sorted(unreachable))}")

    dists = _distributions(layer)
    owner = {top: name for name, (tops, _) in dists.items() for top in tops}
    missing = {top for top in closure.third_party - RUNTIME_PROVIDED if top not in owner}
    if missing:
        problems.append(f"imported but not in the layer: {', '.join(sorted(missing))}")
    needed: set[str] = set()
    queue = [owner[top] for top in closure.third_party if top in owner]
    while queue:
        name = queue.pop()
        if name not in needed:
            needed.add(name)
            queue += [dep for dep in dists.get(name, (set(), set()))[1] if dep in dists]
    unused = sorted(set(dists) - needed)
    if unused:
        problems.append(f"distributions no function needs: {', '.join(unused)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    layer, functions = Path(args[0]), Path(args[1])
    problems = check_layer(layer, functions)
    modules = len(package_modules(layer))
    if problems:
        print(f"{'layer contents':<22} FAILED")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(
        f"{'layer contents':<22} ok: {modules} {RUNTIME_PACKAGE} modules, each imported by a function; no {DEV_PACKAGE}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
