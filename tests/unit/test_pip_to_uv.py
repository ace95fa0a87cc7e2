"""pip's package sources carried over to uv: `./dev` installs with uv, which reads none of pip's configuration.

The translation is checked on `pip config list` output as pip writes it, and end to end: the module run as `./dev`
runs it (a bare interpreter, -S) against a real pip reading a pip.conf and PIP_* variables made for the test.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bulwark_dev.pip_to_uv import pip_settings, uv_variables

ROOT = Path(__file__).resolve().parents[2]

LISTING = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/srv/overridden'
global.index-url='https://mirror.example/simple'
install.index-url='https://install-mirror.example/simple'
freeze.index-url='https://not-for-installs.example/simple'
"""


def test_environment_beats_the_install_section_which_beats_global() -> None:
    settings = pip_settings(LISTING)
    assert settings["find-links"] == "/opt/wheels"  # PIP_FIND_LINKS over the file's global value
    assert settings["index-url"] == "https://install-mirror.example/simple"  # [install] over [global]
    assert settings["constraint"] == "/etc/xdg/pip/constraints.txt"


def test_each_pip_setting_becomes_its_uv_variable() -> None:
    assert uv_variables(pip_settings(LISTING), {}) == {
        "UV_DEFAULT_INDEX": "https://install-mirror.example/simple",
        "UV_INDEX": "file:///opt/pypi/simple file:///opt/pypi-more/simple",
        "UV_INDEX_STRATEGY": "unsafe-best-match",
        "UV_FIND_LINKS": "/opt/wheels",
        "UV_CONSTRAINT": "/etc/xdg/pip/constraints.txt",
        "UV_HTTP_TIMEOUT": "180",
        "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    }


def test_several_find_links_are_comma_separated_for_uv() -> None:
    settings = pip_settings("global.find-links='/a/wheels\\n/b/wheels'\n")
    assert uv_variables(settings, {})["UV_FIND_LINKS"] == "/a/wheels,/b/wheels"


def test_what_the_user_set_for_uv_is_left_alone() -> None:
    chosen = {"UV_DEFAULT_INDEX": "https://mine.example/simple", "SSL_CERT_FILE": "/my/ca.pem"}
    variables = uv_variables(pip_settings(LISTING), chosen)
    assert "UV_DEFAULT_INDEX" not in variables
    assert "SSL_CERT_FILE" not in variables
    assert variables["UV_FIND_LINKS"] == "/opt/wheels"


def test_no_index_and_unparseable_lines() -> None:
    settings = pip_settings("global.no-index='true'\nnot a setting\nglobal.timeout=<broken\n")
    assert settings == {"no-index": "true"}
    assert uv_variables(settings, {}) == {"UV_NO_INDEX": "1"}


def test_run_as_dev_runs_it_against_a_real_pip(tmp_path: Path) -> None:
    # `./dev` runs it with the base interpreter (the one with pip), standard library only.
    base = getattr(sys, "_base_executable", sys.executable)
    if subprocess.run([base, "-m", "pip", "--version"], capture_output=True, check=False).returncode != 0:
        pytest.skip(f"{base} has no pip (./dev then has no pip settings to carry over)")
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://mirror.example/simple\nextra-index-url = https://extra.example/s\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(
        HOME=str(tmp_path),  # no user pip.conf
        PIP_CONFIG_FILE=str(conf),
        PIP_FIND_LINKS=str(tmp_path / "wheels"),
        PYTHONPATH=str(ROOT / "devtools"),
    )
    out = subprocess.run(
        [base, "-S", "-m", "bulwark_dev.pip_to_uv"], env=env, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    exported = dict(shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in out.splitlines())
    assert exported["UV_DEFAULT_INDEX"] == "https://mirror.example/simple"
    assert exported["UV_INDEX"] == "https://extra.example/s"
    assert exported["UV_INDEX_STRATEGY"] == "unsafe-best-match"
    assert exported["UV_FIND_LINKS"] == str(tmp_path / "wheels")
