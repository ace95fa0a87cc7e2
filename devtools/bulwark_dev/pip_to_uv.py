"""Print `export` lines that give uv the same package sources pip would use here (standard library only).

uv reads none of pip's configuration (pip.conf files, PIP_* variables), so on a machine whose pip points at a mirror,
a find-links folder, a constraint file or a private CA, uv alone would look elsewhere. `./dev` evaluates this module's
output, run with the bare interpreter before anything is installed: `eval "$(python -S -m bulwark_dev.pip_to_uv)"`.

pip's own view of its settings comes from `python -m pip config list` (files and PIP_* variables, already merged per
file); of its sections, `:env:` (PIP_* variables) beats `install`, which beats `global`, as in pip. A variable the user
set for uv already (UV_*, SSL_CERT_FILE, proxies) is never overridden. Without pip there is nothing to translate.
"""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping

# Later sections override earlier ones, as pip applies them for `pip install`.
_PRECEDENCE = ("global", "install", ":env:")


def pip_settings(listing: str) -> dict[str, str]:
    """Merge the lines of `pip config list` (``section.key='value'``) into one effective value per key."""
    ranked: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        name, sep, raw = line.partition("=")
        section, dot, key = name.rpartition(".")
        if not sep or not dot or section not in _PRECEDENCE:
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            continue
        rank = _PRECEDENCE.index(section)
        # pip spells an option with dashes in files and with underscores in PIP_* variables (PIP_FIND_LINKS).
        key = key.replace("_", "-")
        if key not in ranked or rank >= ranked[key][0]:
            ranked[key] = (rank, str(value))
    return {key: value for key, (_, value) in ranked.items()}


def _words(value: str) -> list[str]:
    return value.split()


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def uv_variables(settings: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """The uv (and TLS/proxy) variables equivalent to pip's settings, leaving alone any the user has set."""
    wanted: dict[str, str] = {}
    if "index-url" in settings:
        wanted["UV_DEFAULT_INDEX"] = settings["index-url"].strip()
    extra = _words(settings.get("extra-index-url", ""))
    if extra:
        wanted["UV_INDEX"] = " ".join(extra)
        # pip takes the best version across all its indexes; uv's default stops at the first index that has the name.
        wanted["UV_INDEX_STRATEGY"] = "unsafe-best-match"
    links = _words(settings.get("find-links", ""))
    if links:
        wanted["UV_FIND_LINKS"] = ",".join(links)  # uv: comma-separated; pip: whitespace-separated
    constraints = _words(settings.get("constraint", ""))
    if constraints:
        wanted["UV_CONSTRAINT"] = " ".join(constraints)
    if _truthy(settings.get("no-index", "")):
        wanted["UV_NO_INDEX"] = "1"
    hosts = _words(settings.get("trusted-host", ""))
    if hosts:
        wanted["UV_INSECURE_HOST"] = " ".join(hosts)
    if "timeout" in settings or "default-timeout" in settings:
        wanted["UV_HTTP_TIMEOUT"] = settings.get("timeout", settings.get("default-timeout", "")).strip()
    if "cert" in settings:
        wanted["SSL_CERT_FILE"] = settings["cert"].strip()
    if "client-cert" in settings:
        wanted["SSL_CLIENT_CERT"] = settings["client-cert"].strip()
    if "proxy" in settings:
        wanted["HTTPS_PROXY"] = wanted["HTTP_PROXY"] = settings["proxy"].strip()
    return {name: value for name, value in wanted.items() if value and not environ.get(name)}


def main() -> int:
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0  # no pip here: no pip configuration to carry over
    for name, value in sorted(uv_variables(pip_settings(listing), os.environ).items()):
        print(f"export {name}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
