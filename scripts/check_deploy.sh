#!/usr/bin/env bash
# Deployment checks for template.yaml and the code, offline. Run from anywhere with the project's .venv active:
#   cfn-lint · sam validate (translator) · sam validate --lint · checkov (own venv, offline) · bandit -ll ·
#   dependency lock · dependency audit (skipped when the advisory database cannot be reached) · sam build + layer
#   contents and sizes.
# They are independent and run side by side (scripts/parallel_checks.sh); each one's output is buffered and printed
# whole, in the order below, once it has finished: one summary line per tool, then its findings. Exits non-zero on
# any real finding. A pass of cfn-lint, sam validate, checkov, bandit or sam build + layer contents is kept in
# .aws-sam/check-results and replayed while a hash of exactly what it reads and of the installed tools is unchanged
# (bulwark_dev.check_cache); BULWARK_CHECKS_UNCACHED=1 runs them all.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# sam validate needs a region and (dummy) credentials even though it calls nothing.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-checks-only}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-checks-only}"
export SAM_CLI_TELEMETRY=0

LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/bulwark-check.XXXXXX")"
CHECK_RESULTS="$ROOT/.aws-sam/check-results"
# shellcheck source=scripts/parallel_checks.sh
. "$ROOT/scripts/parallel_checks.sh"
trap 'stop_checks; rm -rf "$LOG_DIR"' EXIT
trap 'exit 130' INT TERM

summary() { printf '%-22s %s\n' "$1" "$2"; }
require() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "missing tool: $1 (activate the project's venv: . .venv/bin/activate; pip install -e '.[dev]')" >&2
    exit 2
  fi
}
require cfn-lint
require sam
require bandit
PY="$(command -v python)"
VENV="$("$PY" -c 'import sys; print(sys.prefix)')"
CHECKOV_VENV="$ROOT/.venv-checkov"
# Besides their named inputs, the cached checks read each tool's configuration files, wherever the tool looks.
CFN_LINT_CONFIG=(--file .cfnlintrc --file .cfnlintrc.yaml --file .cfnlintrc.yml --file "$HOME/.cfnlintrc")
SAM_CONFIG=(--file samconfig.toml --file samconfig.yaml --file samconfig.yml --var AWS_DEFAULT_REGION --var AWS_REGION)
CHECKOV_CONFIG=(--file .checkov.yaml --file .checkov.yml --file "$HOME/.checkov.yaml" --file "$HOME/.checkov.yml"
                --var-prefix CKV_ --var-prefix BC_)

# ---------------------------------------------------------------------------------------------------------- cfn-lint
cfn_lint() {
  if cfn-lint template.yaml >"$LOG_DIR/cfn-lint.txt" 2>&1; then
    summary "cfn-lint" "ok: 0 findings"
  else
    n="$(grep -cE '^[EWI][0-9]{4}' "$LOG_DIR/cfn-lint.txt" || true)"
    summary "cfn-lint" "FAILED: ${n} findings"; cat "$LOG_DIR/cfn-lint.txt"; fail cfn-lint
  fi
}

# ------------------------------------------------------------------------------------------------------ sam validate
sam_validate() {
  if sam validate --template-file template.yaml >"$LOG_DIR/sam.txt" 2>&1; then
    summary "sam validate" "ok: valid SAM template (translator)"
  else
    summary "sam validate" "FAILED"; cat "$LOG_DIR/sam.txt"; fail "sam validate"
  fi
}
sam_validate_lint() {
  if sam validate --lint --template-file template.yaml >"$LOG_DIR/samlint.txt" 2>&1; then
    summary "sam validate --lint" "ok: 0 findings"
  else
    summary "sam validate --lint" "FAILED"; cat "$LOG_DIR/samlint.txt"; fail "sam validate --lint"
  fi
}

# ----------------------------------------------------------------------------------------------------------- checkov
# checkov pins its own boto3, so it lives in .venv-checkov (gitignored), built by scripts/checkov_env.sh (uv) on first
# run or when its pin changed, then reused.
checkov_env() {
  scripts/checkov_env.sh --ready && return 0
  echo "building $CHECKOV_VENV (first run only) ..."
  if ! scripts/checkov_env.sh >"$LOG_DIR/checkov-install.txt" 2>&1; then
    cat "$LOG_DIR/checkov-install.txt"
    echo "cannot install checkov into $CHECKOV_VENV (needs the package registry once)" >&2
    rm -rf "$CHECKOV_VENV"
    fail "checkov (install)"
    return 1
  fi
}
checkov_scan() {
  "$CHECKOV_VENV/bin/checkov" -f template.yaml --framework cloudformation --skip-download -o json \
    >"$LOG_DIR/checkov.json" 2>"$LOG_DIR/checkov.err"
  ck_rc=$?
  if "$PY" - "$LOG_DIR/checkov.json" <<'EOF'
import json, sys
try:
    data = json.load(open(sys.argv[1]))
except ValueError:
    print(f"{'checkov':<22} FAILED: no JSON report"); sys.exit(1)
reports = data if isinstance(data, list) else [data]
passed = failed = 0; skipped = set(); failures = []
for report in reports:
    results = report.get("results", {}) if isinstance(report, dict) else {}
    passed += len(results.get("passed_checks", []))
    for check in results.get("failed_checks", []):
        failed += 1; failures.append(f"  {check['check_id']} {check['resource']}: {check['check_name']}")
    for check in results.get("skipped_checks", []):
        skipped.add((check["check_id"], check["resource"].split(".")[-1]))
ids = sorted({c for c, _ in skipped})
print(f"{'checkov':<22} {'ok' if not failed else 'FAILED'}: passed {passed}, failed {failed}, "
      f"skipped {len(skipped)} (justified inline: {', '.join(ids) or 'none'})")
for line in failures:
    print(line)
sys.exit(1 if failed else 0)
EOF
  then :; else fail checkov; [[ -s "$LOG_DIR/checkov.err" ]] && cat "$LOG_DIR/checkov.err"; fi
  if [[ $ck_rc -ne 0 && $ck_rc -ne 1 ]]; then cat "$LOG_DIR/checkov.err"; fail "checkov (rc $ck_rc)"; fi
  return 0
}
checkov_check() { checkov_env && cached checkov_scan --file template.yaml "${CHECKOV_CONFIG[@]}" --env "$CHECKOV_VENV"; }

# ------------------------------------------------------------------------------------------------------------ bandit
bandit_scan() {
  bandit -r layers functions -ll -q -f json -o "$LOG_DIR/bandit.json" >/dev/null 2>"$LOG_DIR/bandit.err"
  "$PY" - "$LOG_DIR/bandit.json" <<'EOF' || fail bandit
import json, sys
data = json.load(open(sys.argv[1]))
totals = data["metrics"]["_totals"]
high, medium, low = (int(totals.get(f"SEVERITY.{s}", 0)) for s in ("HIGH", "MEDIUM", "LOW"))
loc = int(totals.get("loc", 0))
shown = [r for r in data["results"] if r["issue_severity"] in ("MEDIUM", "HIGH")]
status = "ok" if not shown and not data.get("errors") else "FAILED"
print(f"{'bandit -ll':<22} {status}: high {high}, medium {medium} (low {low}, not gated) in {loc} lines")
for r in shown:
    print(f"  {r['test_id']} {r['issue_severity']} {r['filename']}:{r['line_number']} {r['issue_text']}")
for e in data.get("errors", []):
    print(f"  error: {e}")
sys.exit(1 if status == "FAILED" else 0)
EOF
}

# --------------------------------------------------------------------------------------------------- dependency lock
# The layer installs from requirements.lock with --require-hashes; the lock must still say what requirements.txt says.
dependency_lock() {
  if "$PY" -m bulwark_dev.layer_lock >"$LOG_DIR/lock.txt" 2>&1; then
    summary "dependency lock" "ok: $(tail -1 "$LOG_DIR/lock.txt")"
  else
    summary "dependency lock" "FAILED"; cat "$LOG_DIR/lock.txt"; fail "dependency lock"
  fi
}

# -------------------------------------------------------------------------------------------------- dependency audit
# pip-audit needs the PyPI/OSV advisory database over the network; there is no offline database, so skip gracefully.
REQS="layers/bulwark/requirements.txt"
dependency_audit() {
  if ! command -v pip-audit >/dev/null 2>&1; then
    summary "dependency audit" "skipped: pip-audit is not installed (pip install pip-audit; it needs the network)"
  elif ! "$PY" - <<'EOF' 2>/dev/null
import socket, sys
try:
    socket.create_connection(("api.osv.dev", 443), timeout=3).close()
except OSError:
    sys.exit(1)
EOF
  then
    summary "dependency audit" "skipped: the advisory database (OSV) is unreachable offline; run pip-audit -r $REQS online"
  elif pip-audit -r "$REQS" --progress-spinner off >"$LOG_DIR/audit.txt" 2>&1; then
    summary "dependency audit" "ok: no known vulnerabilities in $REQS"
  else
    summary "dependency audit" "FAILED"; cat "$LOG_DIR/audit.txt"; fail "dependency audit"
  fi
}

# --------------------------------------------------------------------------------------------------------- sam build
# SAM builds the python3.13 layer and functions with a python3.13 on PATH. Find one: PATH, then pyenv.
find_py313() {
  if command -v python3.13 >/dev/null 2>&1 && python3.13 -c 'import sys' >/dev/null 2>&1; then
    dirname "$(command -v python3.13)"; return 0
  fi
  if command -v pyenv >/dev/null 2>&1; then
    local root; root="$(pyenv root)"
    local candidate
    for candidate in "$root"/versions/3.13*/bin; do
      [[ -x "$candidate/python3.13" ]] && { echo "$candidate"; return 0; }
    done
  fi
  return 1
}
PY313_DIR="$(find_py313)" || PY313_DIR=""
# sam build, the artifact sizes and the layers' contents, as one check. A pass is kept like the others' (the build is
# a function of the template, the code, the layers' locks, the build tools and the python3.13 it builds with; the
# check is layer_check's code), so a second run skips ~13 s of CPU; `sam build --cached` reuses what is unchanged
# when it does run.
sam_build_checks() {
if [[ -n "$PY313_DIR" ]]; then
  BUILD_DIR="$LOG_DIR/build"
  if PATH="$PY313_DIR:$PATH" PYENV_VERSION="$(basename "$(dirname "$PY313_DIR")")" \
       sam build --template-file template.yaml --build-dir "$BUILD_DIR" \
         --cached --cache-dir "$ROOT/.aws-sam/check-cache" >"$LOG_DIR/build.txt" 2>&1; then
    # (--cached: a layer or function whose source folder is unchanged since the last check is reused, not rebuilt)
    summary "sam build" "ok: $(find "$BUILD_DIR" -maxdepth 1 -mindepth 1 -type d | wc -l) artifacts (layers and functions)"
    # Only what runs ships, per function and layer; bytecode; the policy's twin; sizes against the 20 MB target.
    "$PY" -m bulwark_dev.layer_check "$BUILD_DIR" template.yaml || fail "layers"
  else
    summary "sam build" "FAILED"; tail -40 "$LOG_DIR/build.txt"; fail "sam build"
  fi
else
  summary "sam build" "FAILED: no python3.13 found (install it: pyenv install 3.13, or apt/python.org 3.13 on PATH)"
  fail "sam build (python3.13)"
fi
}
# Which python3.13 builds, by path and full version (build date and compiler included).
BULWARK_BUILD_PYTHON="$PY313_DIR $([[ -n "$PY313_DIR" ]] && "$PY313_DIR/python3.13" -VV 2>&1)"
export BULWARK_BUILD_PYTHON
BUILD_INPUTS=(--file template.yaml --file layers --file functions --file devtools/bulwark_dev "${SAM_CONFIG[@]}"
              --env "$VENV" --var BULWARK_BUILD_PYTHON)

# ----------------------------------------------------------------------------------------------------------- verdict
# Printed in this order; the slowest start first, so they have the cores early.
check sam-build cached sam_build_checks "${BUILD_INPUTS[@]}"
check checkov checkov_check
check cfn-lint cached cfn_lint --file template.yaml "${CFN_LINT_CONFIG[@]}" --env "$VENV" --var AWS_DEFAULT_REGION
check sam-validate cached sam_validate --file template.yaml "${SAM_CONFIG[@]}" --env "$VENV"
check sam-lint cached sam_validate_lint --file template.yaml "${SAM_CONFIG[@]}" "${CFN_LINT_CONFIG[@]}" --env "$VENV"
check bandit cached bandit_scan --file layers --file functions --file .bandit --env "$VENV"
check lock dependency_lock
check audit dependency_audit
checks_report

if ((${#FAILED[@]})); then
  echo "deploy checks FAILED: ${FAILED[*]}"
  exit 1
fi
echo "deploy checks passed"
