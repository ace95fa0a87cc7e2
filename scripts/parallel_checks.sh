# Sourced by scripts/check_deploy.sh: independent checks side by side, their output printed in a fixed order.
#   check NAME COMMAND [ARGS...]   start COMMAND (usually a shell function) in the background; its output is buffered
#   checks_report                  wait for each check in the order started and print its output whole; sets FAILED
#   stop_checks                    stop the checks still running and what they started, by PID (for an EXIT trap)
# Inside a check:
#   fail WHAT                      record a failure (the check's own output says why); a non-zero exit is one too
#   cached FUNCTION KEY-OPTIONS    run FUNCTION, or replay the output of its last pass when the key that
#                                  bulwark_dev.check_cache computes from KEY-OPTIONS and FUNCTION's text is unchanged
# Needs LOG_DIR (a private temporary folder), PY (the project's python) and CHECK_RESULTS (where passes are kept).
# BULWARK_CHECKS_UNCACHED=1 runs every check (passes are still recorded).

_CHECK_NAMES=()
_CHECK_PIDS=()

check() {
  local name=$1
  shift
  _CHECK_NAMES+=("$name")
  (CHECK=$name && "$@") >"$LOG_DIR/check.$name.out" 2>&1 &
  _CHECK_PIDS+=($!)
}

fail() { echo "$1" >>"$LOG_DIR/check.$CHECK.failed"; }

checks_report() {
  local i name rc
  FAILED=()
  for i in "${!_CHECK_NAMES[@]}"; do
    name=${_CHECK_NAMES[$i]}
    wait "${_CHECK_PIDS[$i]}"
    rc=$?
    _CHECK_PIDS[i]=""  # waited for: the PID may belong to another process from now on
    cat "$LOG_DIR/check.$name.out"
    if [[ -s "$LOG_DIR/check.$name.failed" ]]; then
      mapfile -t -O "${#FAILED[@]}" FAILED <"$LOG_DIR/check.$name.failed"
    elif ((rc != 0)); then
      echo "$name: exited $rc"
      FAILED+=("$name (exit $rc)")
    fi
  done
}

_stop_tree() {
  local child
  for child in $(pgrep -P "$1"); do _stop_tree "$child"; done
  kill "$1" 2>/dev/null
}
stop_checks() {
  local pid
  for pid in "${_CHECK_PIDS[@]}"; do [[ -n "$pid" ]] && _stop_tree "$pid"; done
  return 0
}

_check_key() { declare -f "$1" | "$PY" -m bulwark_dev.check_cache "${@:2}"; }

cached() {
  local fn=$1 before after rc
  local fresh="$LOG_DIR/cached.$fn.out" kept="$CHECK_RESULTS/$fn"
  if ! before=$(_check_key "$@"); then
    echo "($fn: no cache key, so it runs)"
    "$fn"
    return
  fi
  if [[ -z "${BULWARK_CHECKS_UNCACHED:-}" && -f "$kept.$before" ]]; then
    sed '1s/$/ (cached: same inputs and tools as a pass)/' "$kept.$before"
    return 0
  fi
  "$fn" >"$fresh" 2>&1
  rc=$?
  cat "$fresh"
  ((rc == 0)) || return "$rc"
  [[ -s "$LOG_DIR/check.$CHECK.failed" ]] && return 0
  # Kept only if nothing it read changed while it ran; renamed into place whole (a concurrent run sees all or none).
  after=$(_check_key "$@") && [[ "$after" == "$before" ]] || return 0
  mkdir -p "$CHECK_RESULTS" && rm -f "$kept".* && cp "$fresh" "$CHECK_RESULTS/.partial.$fn.$$" &&
    mv "$CHECK_RESULTS/.partial.$fn.$$" "$kept.$before"
  return 0
}
