#!/usr/bin/env bash
# checkov's own environment, .venv-checkov (gitignored): checkov pins its own boto3, so it cannot share .venv.
#   scripts/checkov_env.sh           build it unless it is current (first run, or when the pin or the Python changed)
#   scripts/checkov_env.sh --ready   exit status only: 0 when it is current
# Built with uv: the one `./dev` installed (BULWARK_UV, with pip's index settings carried over), else a uv on PATH,
# else pip. A stamp keyed on the pin and the interpreter's version marks a finished build.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-checkov"
SPEC="checkov>=3.2,<4"
STAMP="$VENV/.bulwark-installed"
# The interpreter behind the active venv (the project's), else python3.
BASE_PY="$(python -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))' 2>/dev/null ||
           command -v python3)"
inputs="$SPEC python $("$BASE_PY" -c 'import sys; print(sys.version.split()[0])')"

current() { [[ -x "$VENV/bin/checkov" && -f "$STAMP" && "$(cat "$STAMP")" == "$inputs" ]]; }

if [[ "${1:-}" == --ready ]]; then
  current
  exit
fi
current && exit 0

uv="${BULWARK_UV:-$(command -v uv || true)}"
rm -rf "$VENV"
if [[ -n "$uv" ]]; then
  "$uv" venv -q --python "$BASE_PY" "$VENV"
  "$uv" pip install -q --compile-bytecode --python "$VENV/bin/python" "$SPEC"  # compiled: see ./dev
else
  "$BASE_PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$SPEC"
fi
echo "$inputs" >"$STAMP"
