"""The deployment checks' verdict on `sam build` output (`bulwark_dev.layer_check.check_build`), on small builds made
here: each rule fails on the build that breaks it, and passes on the one that keeps it. The real build is checked by
scripts/check_deploy.sh on every `./dev test`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bulwark_dev.layer_check import check_build

TEMPLATE = """
Globals:
  Function:
    Layers: [!Ref CoreLayer]
Resources:
  CoreLayer: {Type: AWS::Serverless::LayerVersion, Properties: {ContentUri: layers/core/}}
  ExtraLayer: {Type: AWS::Serverless::LayerVersion, Properties: {ContentUri: layers/core/}}
  PlainFunction: {Type: AWS::Serverless::Function, Properties: {CodeUri: functions/plain/}}
  ExtraFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: functions/extra/, Layers: [!Ref ExtraLayer]}
"""


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


def _distribution(site: Path, name: str, files: dict[str, str], *, recorded: tuple[str, ...] = ()) -> None:
    """A wheel as pip installs it: its files, METADATA, and a RECORD that also lists `recorded` (since pruned)."""
    for relative, text in files.items():
        _write(site / relative, text)
    info = site / f"{name}-1.0.dist-info"
    _write(info / "METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    _write(info / "RECORD", "".join(f"{path},,\n" for path in [*files, *recorded]))


def _build(tmp_path: Path, *, plain: str, extra: str = "import extrapkg\n") -> Path:
    """CoreLayer: bulwark (policy and its twin) and corepkg; ExtraLayer: extrapkg, for ExtraFunction only."""
    build = tmp_path / "build"
    _write(tmp_path / "template.yaml", TEMPLATE)
    core = build / "CoreLayer" / "python"
    _write(core / "bulwark" / "__init__.py", "")
    _write(core / "bulwark" / "policy.yaml", "{}\n")
    _write(core / "bulwark" / "policy.yaml.json", "{}\n")
    _distribution(
        core,
        "corepkg",
        {
            "corepkg/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import corepkg.typed\n",
            "corepkg/used.py": "",
        },
        recorded=("corepkg/gone.py", "corepkg/typed.py"),
    )
    _distribution(build / "ExtraLayer" / "python", "extrapkg", {"extrapkg/__init__.py": ""})
    _write(build / "PlainFunction" / "app.py", plain)
    _write(build / "ExtraFunction" / "app.py", extra)
    for source in build.glob("*/python/**/*.py"):  # what `compileall` for python3.13 leaves beside each module
        _write(source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc", "")
    return build


def _problems(tmp_path: Path, build: Path) -> str:
    return "\n".join(check_build(build, tmp_path / "template.yaml").problems)


def test_a_build_that_keeps_every_rule_passes(tmp_path: Path) -> None:
    build = _build(tmp_path, plain="import bulwark\nimport corepkg.used\n")
    report = check_build(build, tmp_path / "template.yaml")
    assert report.problems == []
    assert any("ExtraFunction" in line and "CoreLayer + ExtraLayer" in line for line in report.lines)


def test_a_function_importing_a_package_only_another_functions_layer_holds_fails(tmp_path: Path) -> None:
    build = _build(tmp_path, plain="import bulwark\nimport corepkg.used\nimport extrapkg\n")
    assert "PlainFunction imports extrapkg, which none of its layers (CoreLayer) holds" in _problems(tmp_path, build)


def test_reaching_a_pruned_module_fails_and_type_checking_imports_do_not_count(tmp_path: Path) -> None:
    # corepkg.typed is pruned too, but only an `if TYPE_CHECKING:` block imports it: that never runs.
    build = _build(tmp_path, plain="import bulwark\nimport corepkg.used\n\ndef later():\n    import corepkg.gone\n")
    problems = _problems(tmp_path, build)
    assert "PlainFunction can reach modules the layer build removed: corepkg.gone" in problems
    assert "corepkg.typed" not in problems


def test_a_distribution_no_function_of_its_layer_needs_fails(tmp_path: Path) -> None:
    build = _build(tmp_path, plain="import bulwark\n")  # nothing imports corepkg any more
    assert "CoreLayer holds distributions none of its functions" in _problems(tmp_path, build)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda b: (b / "CoreLayer/python/bulwark/leftover.py").write_text(""), "bulwark modules no function imports"),
        (lambda b: (b / "CoreLayer/python/bulwark_dev").mkdir(), "holds the development package bulwark_dev"),
        (lambda b: (b / "CoreLayer/python/bulwark/policy.yaml.json").unlink(), "no policy.yaml.json beside"),
    ],
)
def test_each_layer_rule_fails_on_the_build_that_breaks_it(tmp_path: Path, damage: object, expected: str) -> None:
    build = _build(tmp_path, plain="import bulwark\nimport corepkg.used\n")
    assert callable(damage)
    damage(build)
    assert expected in _problems(tmp_path, build)


def test_a_module_without_bytecode_fails(tmp_path: Path) -> None:
    build = _build(tmp_path, plain="import bulwark\nimport corepkg.used\n")
    _write(build / "CoreLayer/python/corepkg/late.py", "")
    assert "CoreLayer: 1 modules without python3.13 bytecode, e.g. corepkg/late.py" in _problems(tmp_path, build)
