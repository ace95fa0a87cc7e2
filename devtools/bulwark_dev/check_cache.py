"""The key under which a deployment check's pass is kept (`python -m bulwark_dev.check_cache`).

scripts/check_deploy.sh runs cfn-lint, sam validate, checkov and bandit on every `./dev test`. They are deterministic:
the same template, code and configuration checked by the same tool versions gets the same verdict. So a pass is kept
under a key that hashes exactly what the check reads, and a later run with the same key replays the kept output
instead of running the tool again (scripts/parallel_checks.sh, `cached`). The key covers:

- the check's own command: the shell function's text, read from stdin (flags and post-processing included);
- every input file by path and content, folders recursively (without ``__pycache__``); a missing file counts too,
  so creating a configuration file the tool would read changes the key;
- every distribution installed in each tool environment, by name, version and RECORD (the hash of every file it
  installed), and the environment's pyvenv.cfg (its Python): a tool's rules ship with it (cfn-lint's specifications,
  checkov's checks, SAM's translator);
- the environment variables the tools read, by exact name or by prefix.

Only passes are kept, and only when the key computed after the check equals the one computed before it (an input
that changed while the tool ran is not recorded as checked). Test results are never cached: this is for static checks.

    declare -f check_fn | python -m bulwark_dev.check_cache --env .venv --file template.yaml --var AWS_DEFAULT_REGION
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

_SKIPPED_FOLDERS = {"__pycache__"}  # written by any import of the code; never what a check reads


def _files_under(path: Path) -> Iterator[Path]:
    """``path`` itself, or every file below it in a stable order."""
    if not path.is_dir():
        yield path
        return
    for folder, subfolders, files in os.walk(path):
        subfolders[:] = sorted(d for d in subfolders if d not in _SKIPPED_FOLDERS)
        for name in sorted(files):
            yield Path(folder) / name


def _installed(venv: Path) -> Iterator[bytes]:
    """A virtualenv's interpreter and every distribution in it: its dist-info folder name and RECORD."""
    config = venv / "pyvenv.cfg"
    yield b"pyvenv.cfg\0" + (config.read_bytes() if config.is_file() else b"missing")
    for site in sorted(venv.glob("lib/python*/site-packages")):
        for entry in sorted(site.iterdir()):
            if entry.name.endswith((".dist-info", ".egg-info")):
                record = entry / "RECORD"
                yield entry.name.encode() + b"\0" + (record.read_bytes() if record.is_file() else b"no RECORD")


def check_key(
    command: str,
    files: Iterable[Path] = (),
    environments: Iterable[Path] = (),
    variables: Iterable[str] = (),
    variable_prefixes: Iterable[str] = (),
    environ: dict[str, str] | None = None,
) -> str:
    """The hex SHA-256 of everything listed in the module docstring (paths as given: run from the project root)."""
    env = os.environ if environ is None else environ
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        # Length-prefixed, so no two different sequences of parts can hash alike.
        for part in (label.encode(), data):
            digest.update(len(part).to_bytes(8, "big") + part)

    add("command", command.encode())
    for given in files:
        for path in _files_under(given):
            add(f"file {path}", path.read_bytes() if path.is_file() else b"missing")
    for venv in environments:
        for line in _installed(venv):
            add(f"environment {venv}", line)
    for name in variables:
        add(f"variable {name}", env[name].encode() if name in env else b"unset")
    for prefix in variable_prefixes:
        for name in sorted(n for n in env if n.startswith(prefix)):
            add(f"variable {name}", env[name].encode())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the cache key of a deployment check (command on stdin).")
    parser.add_argument("--file", type=Path, action="append", default=[], help="an input file or folder")
    parser.add_argument("--env", type=Path, action="append", default=[], help="a virtualenv the tool runs from")
    parser.add_argument("--var", action="append", default=[], help="an environment variable the tool reads")
    parser.add_argument("--var-prefix", action="append", default=[], help="every variable starting with this")
    args = parser.parse_args(argv)
    command = sys.stdin.read()
    if not command.strip():
        parser.error("the check's command (its shell function's text) is expected on stdin")
    print(check_key(command, args.file, args.env, args.var, args.var_prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
