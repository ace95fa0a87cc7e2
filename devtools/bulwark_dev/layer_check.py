"""Only what runs ships: what the Lambda layers hold, checked against what each function imports.

Each function's import closure is followed statically from its handler (every `import` in a module, lazy ones inside
functions included; those under `if TYPE_CHECKING:` never run and are skipped) through the `bulwark` package and the
third-party packages of the layers the template attaches to it, plus any module an exec wrapper in those layers starts
with `python -m` (the streaming runtime loop AWS_LAMBDA_EXEC_WRAPPER runs instead of the managed runtime's client).

`sam build`'s output fails the check when

- a layer holds the development package (`bulwark_dev`), or a `bulwark` module no function can import;
- a function imports a third-party package none of its layers holds (boto3 and botocore excepted: Lambda's python3.13
  runtime provides them, and Bulwark uses them only off the hot path);
- a function can reach a module the layer build pruned (the wheel's RECORD lists it, the layer lacks it), except the
  lazy imports listed in LAZY_ONLY, each with the reason it never runs in Bulwark;
- a layer holds a distribution that no function using that layer needs;
- a module ships without python3.13 bytecode, the shipped policy has no JSON twin, or a layer exceeds its size target.

    python -m bulwark_dev.layer_check <sam build dir> [template.yaml]    (scripts/check_deploy.sh, after `sam build`)
"""

from __future__ import annotations

import ast
import io
import os
import re
import sys
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNTIME_PACKAGE = "bulwark"
DEV_PACKAGE = "bulwark_dev"
# Provided by Lambda's Python runtime; Bulwark imports them only off the hot path (Bedrock, SageMaker, the CLI).
RUNTIME_PROVIDED = frozenset({"boto3", "botocore"})
LAYER_TARGET_BYTES = 20 * 1024 * 1024  # issue 15: each layer at most 20 MB unzipped
UNZIPPED_LIMIT, ZIPPED_LIMIT = 250 * 1024 * 1024, 50 * 1024 * 1024  # Lambda: function plus layers; a direct upload
# Imports a reachable module makes only on a path Bulwark never takes, so the layer build may prune their target:
# (importer, imported prefix) -> why it never runs. Checked: no runtime module names any of the `triggers`.
LAZY_ONLY: dict[tuple[str, str], str] = {
    (
        "aws_lambda_powertools.shared.functions",
        "aws_lambda_powertools.event_handler",
    ): "pydantic_to_dict runs only for a pydantic model handed to Powertools as an event (Logger.inject_lambda_context"
    " with log_event, idempotency); Bulwark uses neither (idempotency is pruned, so reaching it fails on its own) and"
    " hands Powertools plain dicts",
}
LAZY_ONLY_TRIGGERS = frozenset({"inject_lambda_context", "extract_event_from_common_models", "pydantic_to_dict"})
# How pip names a distribution's requirement (PEP 508): the name, then extras, versions or markers.
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_TARGET = {  # the layers' platform, for requirement markers (layers/bulwark/Makefile builds for it)
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


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def parse_module(path: Path) -> ast.Module:
    """`ast.parse` of a source file. CPython 3.11 can raise a spurious "AST constructor recursion depth mismatch"
    SystemError when another thread builds an AST at the same moment (gh-106905; under pytest, a module imported
    and assertion-rewritten on a server thread): the parse is deterministic, so it is simply tried again."""
    source = path.read_text(encoding="utf-8")
    for _ in range(4):
        try:
            return ast.parse(source, filename=str(path))
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc):
                raise
    return ast.parse(source, filename=str(path))


def _imports(path: Path, module: str) -> Iterator[str]:
    """Every module an `import` in `path` may load: `from a import b` yields `a` and `a.b` (b may be a submodule)."""
    tree = parse_module(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            assert isinstance(node, ast.If)
            stack.extend(node.orelse)  # the `else:` of `if TYPE_CHECKING:` does run
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            yield name
            yield from (f"{name}.{alias.name}" for alias in node.names)
        stack.extend(ast.iter_child_nodes(node))


def _source(roots: Sequence[Path], module: str) -> Path | None:
    for root in roots:
        path = root.joinpath(*module.split("."))
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
    return None


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
    third_party: set[str] = field(default_factory=set)  # top-level names of everything else Bulwark's code imports
    dev_imports: set[str] = field(default_factory=set)  # runtime modules that import the development package
    external: set[str] = field(default_factory=set)  # third-party modules reached (when followed)
    unresolved: set[str] = field(default_factory=set)  # third-party names imported but not found (attributes, or gone)


_EXEC_MODULE = re.compile(rf"\bpython3?(?:\.\d+)?\s+-m\s+({RUNTIME_PACKAGE}(?:\.\w+)+)")


def wrapper_modules(scripts: Iterable[Path]) -> set[str]:
    """Modules of the runtime package that exec wrapper `scripts` start with `python -m`: entry points beside the
    handlers."""
    found: set[str] = set()
    for path in scripts:
        found.update(_EXEC_MODULE.findall(path.read_text(encoding="utf-8", errors="replace")))
    return found


def _shipped_wrappers(root: Path) -> list[Path]:
    """The exec wrappers the runtime package ships: its files without a suffix."""
    return [
        p for p in (root / RUNTIME_PACKAGE).rglob("*") if p.is_file() and not p.suffix and "__pycache__" not in p.parts
    ]


def _walk(roots: Sequence[Path], starts: Iterable[tuple[str, str]], *, third_party: bool) -> Closure:
    """The closure of `starts` ((module, importer) pairs) over the modules under `roots`. `third_party`: follow into
    other packages too (otherwise only the runtime package is followed)."""
    closure = Closure()
    stdlib = sys.stdlib_module_names
    seen: set[str] = set()
    pending = list(starts)
    while pending:
        name, importer = pending.pop()
        top = name.split(".")[0]
        ours = importer.split(".")[0] in (RUNTIME_PACKAGE, "handler", "exec wrapper")
        if not top or top in stdlib:
            continue
        if top == DEV_PACKAGE:
            closure.dev_imports.add(importer)
            continue
        if top != RUNTIME_PACKAGE:
            if ours:
                closure.third_party.add(top)
            if not third_party or any(importer == i and name.startswith(p) for i, p in LAZY_ONLY):
                continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            module = ".".join(parts[:i])
            if module in seen:
                continue
            path = _source(roots, module)
            if path is None:
                if top != RUNTIME_PACKAGE:
                    closure.unresolved.add(module)
                continue
            seen.add(module)
            (closure.modules if top == RUNTIME_PACKAGE else closure.external).add(module)
            pending += [(imported, module) for imported in _imports(path, module)]
    return closure


def runtime_closure(root: Path, handlers: Iterable[Path]) -> Closure:
    """What the handlers and the exec wrappers' modules import, followed through the runtime package under `root`."""
    starts = [(name, "handler") for handler in handlers for name in _imports(handler, "app")]
    starts += [(name, "exec wrapper") for name in sorted(wrapper_modules(_shipped_wrappers(root)))]
    return _walk([root], starts, third_party=False)


def _marker_holds(marker: str) -> bool:
    from packaging.markers import Marker

    return Marker(marker).evaluate(dict(_TARGET))


@dataclass
class Distribution:
    tops: set[str]  # its top-level names
    requires: set[str]  # the distributions it requires on the target
    recorded: set[str]  # every module its RECORD lists (installed, whether or not still present)


def _module_of(record_path: str) -> str | None:
    if not record_path.endswith(".py") or "__pycache__" in record_path or ".dist-info/" in record_path:
        return None
    parts = record_path[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def distributions(layer: Path) -> dict[str, Distribution]:
    """The distributions installed in a layer's `python/` directory, by normalised name."""
    found: dict[str, Distribution] = {}
    for info in layer.glob("*.dist-info"):
        meta = (info / "METADATA").read_text(encoding="utf-8", errors="replace")
        name = _normalise(next(line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Name:")))
        requires = set()
        for line in meta.splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            requirement, _, marker = line.split(":", 1)[1].partition(";")
            match = _REQUIREMENT_NAME.match(requirement)
            if match and (not marker.strip() or _marker_holds(marker)):
                requires.add(_normalise(match.group(1)))
        record = info / "RECORD"
        paths = (
            [line.split(",", 1)[0] for line in record.read_text(encoding="utf-8").splitlines()]
            if record.is_file()
            else []
        )
        tops = set()
        for path in paths:
            first = path.split("/", 1)[0]
            if first and not first.endswith((".dist-info", ".data")) and first not in ("..", "__pycache__", "bin"):
                tops.add(first.removesuffix(".py").split(".")[0])
        found[name] = Distribution(tops, requires, {m for m in map(_module_of, paths) if m})
    return found


def _needed(dists: dict[str, Distribution], direct: set[str]) -> set[str]:
    needed: set[str] = set()
    queue = list(direct)
    while queue:
        name = queue.pop()
        if name not in needed and name in dists:
            needed.add(name)
            queue += list(dists[name].requires)
    return needed


# ------------------------------------------------------------------------------------------------ sam build's output
@dataclass(frozen=True)
class FunctionBuild:
    logical_id: str
    layers: tuple[str, ...]  # the layers' logical ids, in the template's order (Globals first)
    wrapper: str | None  # AWS_LAMBDA_EXEC_WRAPPER, a path under /opt


def _refs(value: Any) -> list[str]:
    return [item["Ref"] for item in value or [] if isinstance(item, dict) and isinstance(item.get("Ref"), str)]


def template_builds(template: Path) -> tuple[dict[str, FunctionBuild], list[str]]:
    """The functions (with their layers, Globals' first as SAM merges them) and the layers of `template`."""
    from bulwark_dev.local.template_model import load_yaml

    raw = load_yaml(template)
    glob = (raw.get("Globals") or {}).get("Function") or {}
    resources: dict[str, Any] = raw["Resources"]
    layers = [lid for lid, r in resources.items() if r.get("Type") == "AWS::Serverless::LayerVersion"]
    functions = {}
    for lid, resource in resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties") or {}
        env = {**((glob.get("Environment") or {}).get("Variables") or {})}
        env.update((props.get("Environment") or {}).get("Variables") or {})
        wrapper = env.get("AWS_LAMBDA_EXEC_WRAPPER")
        layer_ids = tuple(_refs(glob.get("Layers")) + _refs(props.get("Layers")))
        functions[lid] = FunctionBuild(lid, layer_ids, wrapper if isinstance(wrapper, str) else None)
    return functions, layers


def _sizes(path: Path) -> tuple[int, int]:
    """(bytes unzipped, bytes zipped) of a directory, zipped as `sam deploy` would (deflate)."""
    total = 0
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for folder, _, files in os.walk(path):
            for name in files:
                full = Path(folder, name)
                total += full.stat().st_size
                archive.write(full, full.relative_to(path))
    return total, buffer.getbuffer().nbytes


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def _uncompiled(site: Path) -> list[Path]:
    """Modules without python3.13 bytecode: Lambda cannot write __pycache__, so each cold start would compile them."""
    return [
        source
        for source in site.rglob("*.py")
        if not (source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc").is_file()
    ]


def _names(path: Path) -> set[str]:
    """The names and attributes a module's code uses (not its comments or strings)."""
    found: set[str] = set()
    for node in ast.walk(parse_module(path)):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.add(node.name.rsplit(".", 1)[-1])
    return found


def _lazy_only_triggered(roots: Iterable[Path]) -> list[str]:
    """Runtime modules that use a LAZY_ONLY trigger: the exception's reason would no longer hold."""
    return sorted(str(path) for root in roots for path in root.rglob("*.py") if _names(path) & LAZY_ONLY_TRIGGERS)


@dataclass
class BuildReport:
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # sizes and counts, for people


def _check_function(build: Path, fn: FunctionBuild, report: BuildReport) -> Closure:
    sites = [build / layer / "python" for layer in fn.layers]
    handler = build / fn.logical_id / "app.py"
    starts = [(name, "handler") for name in _imports(handler, "app")]
    if fn.wrapper and fn.wrapper.startswith("/opt/"):
        # Lambda mounts every layer at /opt: the wrapper is in whichever of the function's layers holds that path.
        found = [build / layer / fn.wrapper.removeprefix("/opt/") for layer in fn.layers]
        scripts = [path for path in found if path.is_file()][:1]
        if not scripts:
            report.problems.append(f"{fn.logical_id}: its exec wrapper {fn.wrapper} is in none of its layers")
        starts += [(name, "exec wrapper") for name in sorted(wrapper_modules(scripts))]
    closure = _walk([build / fn.logical_id, *sites], starts, third_party=True)
    if closure.dev_imports:
        report.problems.append(f"{fn.logical_id}: runtime code imports {DEV_PACKAGE}: {sorted(closure.dev_imports)}")
    dists = {name: d for site in sites for name, d in distributions(site).items()}
    held = {top for d in dists.values() for top in d.tops} | {RUNTIME_PACKAGE}
    missing = sorted(closure.third_party - RUNTIME_PROVIDED - held)
    if missing:
        report.problems.append(
            f"{fn.logical_id} imports {', '.join(missing)}, which none of its layers ({', '.join(fn.layers)}) holds"
        )
    recorded = {m for d in dists.values() for m in d.recorded}
    pruned = sorted(closure.unresolved & recorded)
    if pruned:
        report.problems.append(f"{fn.logical_id} can reach modules the layer build removed: {', '.join(pruned)}")
    return closure


def check_build(build: Path, template: Path) -> BuildReport:
    """Every rule of this module's docstring, on `sam build`'s output directory for `template`."""
    report = BuildReport()
    functions, layers = template_builds(template)
    sites = {layer: build / layer / "python" for layer in layers}
    for layer, site in sites.items():
        if not site.is_dir():
            report.problems.append(f"{layer}: no {site} (did `sam build` run?)")
    if report.problems:
        return report
    closures = {lid: _check_function(build, fn, report) for lid, fn in functions.items()}
    reached = set().union(*(c.modules for c in closures.values()))
    for layer, site in sites.items():
        if (site / DEV_PACKAGE).exists():
            report.problems.append(f"{layer} holds the development package {DEV_PACKAGE}")
        unreachable = package_modules(site) - reached if (site / RUNTIME_PACKAGE).is_dir() else set()
        if unreachable:
            report.problems.append(f"{layer}: {RUNTIME_PACKAGE} modules no function imports: {sorted(unreachable)}")
        dists = distributions(site)
        users = [lid for lid, fn in functions.items() if layer in fn.layers]
        tops = {m.split(".")[0] for lid in users for m in closures[lid].external}
        direct = {name for name, d in dists.items() if d.tops & tops}
        unused = sorted(set(dists) - _needed(dists, direct))
        if unused:
            report.problems.append(f"{layer} holds distributions none of its functions ({users}) needs: {unused}")
        uncompiled = _uncompiled(site)
        if uncompiled:
            example = uncompiled[0].relative_to(site)
            report.problems.append(f"{layer}: {len(uncompiled)} modules without python3.13 bytecode, e.g. {example}")
    triggered = _lazy_only_triggered([*(s / RUNTIME_PACKAGE for s in sites.values() if (s / RUNTIME_PACKAGE).is_dir())])
    if triggered:
        report.problems.append(
            f"LAZY_ONLY's reasons no longer hold: {', '.join(triggered)} use {sorted(LAZY_ONLY_TRIGGERS)}"
        )
    policies = [s / RUNTIME_PACKAGE / "policy.yaml" for s in sites.values() if (s / RUNTIME_PACKAGE).is_dir()]
    for policy in policies:
        if not policy.with_name("policy.yaml.json").is_file():
            report.problems.append(
                f"no {policy.name}.json beside {policy} (layers/bulwark/Makefile writes it; a policy with non-JSON"
                " values, such as an unquoted YAML date, gets none: quote them)"
            )
    _report_sizes(build, functions, sites, report)
    return report


def _report_sizes(
    build: Path, functions: dict[str, FunctionBuild], sites: dict[str, Path], report: BuildReport
) -> None:
    layer_sizes = {layer: _sizes(site.parent) for layer, site in sites.items()}
    for layer, (raw, zipped) in layer_sizes.items():
        over = raw > LAYER_TARGET_BYTES
        report.lines.append(
            f"  {layer:<20} {_mb(raw)} unzipped (target {_mb(LAYER_TARGET_BYTES)}) / {_mb(zipped)} zipped"
            f"{'  OVER THE TARGET' if over else ''}"
        )
        if over:
            report.problems.append(f"{layer} is {_mb(raw)} unzipped, over its {_mb(LAYER_TARGET_BYTES)} target")
    for lid, fn in sorted(functions.items()):
        raw, zipped = _sizes(build / lid)
        total = raw + sum(layer_sizes[layer][0] for layer in fn.layers)
        within = total < UNZIPPED_LIMIT and zipped < ZIPPED_LIMIT
        report.lines.append(
            f"  {lid:<20} {_mb(raw)} unzipped; with {' + '.join(fn.layers)}: {_mb(total)} of 250 MB"
            f"{'' if within else '  OVER THE LIMIT'}"
        )
        if not within:
            report.problems.append(f"{lid} is over Lambda's size limits")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    build, template = Path(args[0]), Path(args[1] if len(args) == 2 else "template.yaml")
    report = check_build(build, template)
    modules = sum(
        len(package_modules(d / "python")) for d in build.iterdir() if (d / "python" / RUNTIME_PACKAGE).is_dir()
    )
    status = "FAILED" if report.problems else f"ok: {modules} {RUNTIME_PACKAGE} modules, each imported by a function"
    print(f"{'layers':<22} {status}")
    for line in report.lines:
        print(line)
    for problem in report.problems:
        print(f"  {problem}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
