"""`bulwark invoke FUNCTION --event FILE`: one handler run on an event file, as `sam local invoke` does, without Docker.

The event goes through the Lambda Invoke API of the running `bulwark local` (found through .bulwark/local.json), so
the handler runs in one of that stack's execution environments with the template's environment: the same tables,
demo model, policy and HMAC secret as the stack's own traffic. With no stack running, one is started for the call and
stopped after it. As `sam local invoke` does, the response payload goes to stdout and the invocation's log lines
(START, the handler's lines, END, REPORT) to stderr. Exit status 0 when the handler returned, 1 when it raised, timed
out or was throttled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO

EXIT_OK, EXIT_FAILED = 0, 1


class InvokeCliError(ValueError):
    """A usage problem (unknown function, unreadable event): `bulwark` prints it and exits 2."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "invoke",
        parents=[common],
        help="run one handler on an event file, as `sam local invoke` does (no Docker)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "function", metavar="FUNCTION", help="the function's logical id in template.yaml, e.g. InvokerFunction"
    )
    p.add_argument("-e", "--event", help="a JSON event file (default: {})")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait (default: the function's Timeout + 5)")
    p.add_argument("--state-dir", help="the local stack's state folder (default: .bulwark in the project folder)")
    p.set_defaults(func=cmd_invoke)


def _read_event(path: str | None) -> bytes:
    if path is None:
        return b"{}"
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvokeCliError(f"cannot read the event file {path}: {exc.strerror}") from None
    try:
        json.loads(raw)
    except ValueError as exc:
        raise InvokeCliError(f"the event file {path} is not valid JSON: {exc}") from None
    return raw


class _Outcome:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    @property
    def request_id(self) -> str:
        return self.headers.get("x-amzn-requestid", "")

    @property
    def failed(self) -> bool:
        return self.status != 200 or bool(self.headers.get("x-amz-function-error"))


def _invoke_endpoint(endpoint: str, function_name: str, payload: bytes, timeout: float) -> _Outcome:
    url = f"{endpoint}/2015-03-31/functions/{function_name}/invocations"
    request = urllib.request.Request(  # noqa: S310 - the local stack's loopback endpoint
        url, data=payload, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return _Outcome(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as exc:  # 429 throttled, 404 unknown function: the Invoke API's own answers
        return _Outcome(exc.code, dict(exc.headers.items()), exc.read())
    except (urllib.error.URLError, TimeoutError) as exc:
        raise InvokeCliError(f"the local stack's Lambda endpoint did not answer: {exc}") from None


def _invocation_logs(log_file: Path | None, request_id: str, wait: float = 3.0) -> list[dict[str, Any]]:
    """The log records of one invocation: its environment's stream from START to REPORT of that request id."""
    if log_file is None or not request_id:
        return []
    deadline = time.monotonic() + wait
    while True:
        found = _scan(log_file, request_id)
        if (found and found[-1].get("platform") == "REPORT") or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _scan(log_file: Path, request_id: str) -> list[dict[str, Any]]:
    stream: str | None = None
    found: list[dict[str, Any]] = []
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        if stream is None and request_id not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if stream is None:
            if record.get("platform") == "START" and record.get("requestId") == request_id:
                stream = str(record.get("log_stream", ""))
                found.append(record)
            continue
        if record.get("log_stream") != stream:
            continue
        found.append(record)
        if record.get("platform") == "REPORT" and record.get("requestId") == request_id:
            break
    return found


def cmd_invoke(args: argparse.Namespace, out: TextIO) -> int:
    from bulwark_dev.local.stack import LocalStack, read_local_state
    from bulwark_dev.local.template_model import load_template

    root = _project_root()
    template = load_template(root / "template.yaml")
    function = template.functions.get(args.function)
    if function is None:
        known = ", ".join(sorted(template.functions))
        raise InvokeCliError(f"no function {args.function!r} in template.yaml (functions: {known})")
    payload = _read_event(args.event)
    timeout = args.timeout or function.timeout + 5.0

    state_dir = Path(args.state_dir) if args.state_dir else root / ".bulwark"
    state = read_local_state(state_dir)
    if state is not None and state.get("lambda_endpoint"):
        outcome = _invoke_endpoint(str(state["lambda_endpoint"]), function.name, payload, timeout)
        log_file = Path(state["log_file"]) if state.get("log_file") else None
        logs = _invocation_logs(log_file, outcome.request_id)
    else:
        sys.stderr.write("No local stack is running: starting one for this invocation ...\n")
        stack = LocalStack(project_root=root, port=0, progress=sys.stderr, log_stream=None, state_dir=state_dir)
        try:
            stack.start()
            outcome = _invoke_endpoint(stack.lambda_endpoint, function.name, payload, timeout)
            logs = _invocation_logs(stack.log_file, outcome.request_id)
        finally:
            stack.stop()
    return _print(args, function.name, outcome, logs, out)


def _proxy_of_stream(body: bytes) -> dict[str, Any] | None:
    """A STREAM integration's answer (metadata, eight NULs, body: bulwark.streaming.http) as the proxy response it
    carries, so a streaming function's answer reads as a buffered one's does."""
    from bulwark.streaming.http import split_metadata

    try:
        split = split_metadata(body)
    except ValueError:
        return None
    if split is None:
        return None
    meta, rest = split
    return {**meta, "body": rest.decode("utf-8", errors="replace"), "isBase64Encoded": False}


def _print(args: argparse.Namespace, name: str, outcome: _Outcome, logs: list[dict[str, Any]], out: TextIO) -> int:
    payload: Any = _proxy_of_stream(outcome.body) if b"\x00" * 8 in outcome.body else None
    if payload is None:
        try:
            payload = json.loads(outcome.body) if outcome.body else None
        except ValueError:
            payload = outcome.body.decode("utf-8", errors="replace")
    status = EXIT_FAILED if outcome.failed else EXIT_OK
    if getattr(args, "json", False):
        result = {
            "function": args.function,
            "function_name": name,
            "request_id": outcome.request_id,
            "status_code": outcome.status,
            "function_error": outcome.headers.get("x-amz-function-error"),
            "error_type": outcome.headers.get("x-amzn-errortype"),
            "payload": payload,
            "log_stream": logs[0].get("log_stream") if logs else None,
            "logs": [_text(record) for record in logs],
        }
        out.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
        return status
    # As `sam local invoke`: the logs on stderr, the payload alone on stdout (so it can be piped).
    for record in logs:
        sys.stderr.write(_text(record) + "\n")
    out.write((json.dumps(payload) if not isinstance(payload, str) else payload) + "\n")
    return status


def _text(record: dict[str, Any]) -> str:
    if record.get("type") == "platform" or set(record) <= {
        "level",
        "message",
        "stream",
        "function_name",
        "timestamp",
        "log_stream",
    }:
        return str(record.get("message", ""))
    shown = {k: v for k, v in record.items() if k != "log_stream"}
    return json.dumps(shown, default=str)


def _project_root() -> Path:
    for d in (Path.cwd(), *Path.cwd().parents):
        if (d / "template.yaml").exists():
            return d
    raise InvokeCliError("No template.yaml here or above: run `bulwark invoke` from the Bulwark project folder.")
