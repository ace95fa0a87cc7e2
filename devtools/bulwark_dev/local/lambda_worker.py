"""One Lambda execution environment in its own process, speaking the Lambda Invoke wire API.

Run as ``python -m bulwark_dev.local.lambda_worker --name ... --code-dir ... --handler app.lambda_handler``. The
environment imports the handler once (its init, the cold start), then serves
``POST /2015-03-31/functions/{name}/invocations`` on 127.0.0.1, one invocation at a time as Lambda does (a second
concurrent invoke is refused: concurrency means more environments, see :mod:`bulwark_dev.local.environments`). It
answers as the Lambda service does (``X-Amz-Function-Error: Unhandled`` and the runtime's error JSON for a raising
handler) and writes the runtime's platform lines (``INIT_START``, ``START``, ``END``, ``REPORT`` with
``Init Duration`` on the first invocation) into its log stream (stdout) in Lambda's text format. After a timeout the
environment exits, as Lambda discards an environment whose invocation timed out. ``GET /__bulwark/stats`` reports the
process's peak RSS for the benchmarks.

:class:`WorkerProcess` is the parent's side: spawn, wait ready, invoke over a pooled connection, stop by PID.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import decimal
import importlib.util
import json
import math
import os
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from bulwark_dev.local._http import ConnectionPool, FastHandler, QuietServer, Response
from bulwark_dev.local._proc import preexec_for_child, stop_process
from bulwark_dev.local.stream_transport import STREAM_PREFIX, STREAM_SUFFIX, serve_stream_invocation

INVOKE_PREFIX = "/2015-03-31/functions/"
STATS_PATH = "/__bulwark/stats"
READY_KEY = "bulwark_worker_ready"
# The Lambda service's synchronous payload limit, both ways.
MAX_PAYLOAD = 6 * 1024 * 1024
_LOCAL_REGION = "us-east-1"
_LOCAL_ACCOUNT = "000000000000"


# ------------------------------------------------------------------------------------------------- inside the worker


class LambdaContext:
    """The attributes and method of the Python runtime's context object that handlers and Powertools read."""

    def __init__(self, *, request_id: str, function_name: str, memory_mb: int, timeout_s: float) -> None:
        self.aws_request_id = request_id
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{_LOCAL_REGION}:{_LOCAL_ACCOUNT}:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "local")
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _decimal_default(value: object) -> object:
    # The Lambda runtime serialises Decimal (what boto3's resource layer returns) rather than failing.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _handler_frames(exc: BaseException) -> list[str]:
    """The traceback as the Lambda runtime reports it: the handler's frames, not this emulator's own."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = (__file__, f"concurrent{os.sep}futures")
    return traceback.format_list(
        [frame for frame in frames if not frame.filename.endswith(own[0]) and own[1] not in frame.filename]
    )


def _load_handler(code_dir: Path, handler: str, module_name: str) -> Callable[[Any, Any], Any]:
    module_path, _, attribute = handler.rpartition(".")
    if not module_path:
        raise ImportError(f"Bad handler '{handler}': not enough values to unpack (expected 2, got 1)")
    relative = Path(*module_path.split("."))
    candidates = [code_dir / relative.with_suffix(".py"), code_dir / relative / "__init__.py"]
    source = next((path for path in candidates if path.exists()), None)
    if source is None:
        raise ImportError(f"Unable to import module '{module_path}': No module named '{module_path}'")
    # Lambda puts the task root first on sys.path, so a handler's own sibling modules import as they do on AWS.
    sys.path.insert(0, str(code_dir))
    spec = importlib.util.spec_from_file_location(module_name, source)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # a unique name per function: no two handlers share a module object
    spec.loader.exec_module(module)
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ImportError(f"Handler '{attribute}' missing on module '{module_path}'")
    return function  # type: ignore[no-any-return]


class _Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.name: str = args.name
        self.memory: int = args.memory
        self.timeout: float = args.timeout
        self.handler: Callable[[Any, Any], Any] | None = None
        self.import_error: dict[str, Any] | None = None
        self.init_duration_ms = 0.0
        self.invocations = 0
        self.handler_cpu_s = 0.0  # CPU of the handler calls alone (what Lambda bills), not of this HTTP plumbing
        # One invocation at a time: Lambda never runs two in one environment, and the handlers' module state
        # (Powertools logger keys and metric set, caches) relies on it.
        self.busy = threading.Lock()
        self.timed_out = False
        # The handler runs on its own thread so a timeout can be answered while it is still busy.
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="invoke")
        self.platform_line(f"INIT_START Runtime Version: python:{sys.version_info[0]}.{sys.version_info[1]}.local")
        started = time.perf_counter()
        try:
            module_name = f"bulwark_local_fn_{args.logical_id}"
            self.handler = _load_handler(Path(args.code_dir), args.handler, module_name)
        except Exception as exc:  # the runtime reports this on every invoke, as Lambda does
            self.import_error = {
                "errorMessage": f"Unable to import module '{args.handler}': {exc}",
                "errorType": "Runtime.ImportModuleError",
                "requestId": "",
                "stackTrace": traceback.format_exception(exc),
            }
            self.platform_line(f"[ERROR] Runtime.ImportModuleError: {self.import_error['errorMessage']}")
        self.init_duration_ms = (time.perf_counter() - started) * 1000

    @staticmethod
    def platform_line(text: str) -> None:
        # The runtime's own lines share the log stream (stdout) with the handler's, in Lambda's text format.
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def invoke(self, event: Any, request_id: str) -> tuple[bytes, bool]:
        """Run the handler on the parsed event; return (response body, is_function_error)."""
        self.platform_line(f"START RequestId: {request_id} Version: $LATEST")
        started = time.perf_counter()
        status = ""
        if self.import_error is not None:
            body, failed = json.dumps(self.import_error).encode(), True
        else:
            context = LambdaContext(
                request_id=request_id, function_name=self.name, memory_mb=self.memory, timeout_s=self.timeout
            )
            future = self.pool.submit(self._timed_handler, event, context)
            try:
                result = future.result(timeout=self.timeout)
                body, failed = self._marshal(result, request_id)
            except concurrent.futures.TimeoutError:
                stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
                message = f"{stamp} {request_id} Task timed out after {self.timeout:.2f} seconds"
                self.platform_line(message)
                body, failed = json.dumps({"errorMessage": message, "errorType": "Sandbox.Timedout"}).encode(), True
                self.timed_out = True
                status = "\tStatus: timeout"
            except Exception as exc:
                error = {
                    "errorMessage": str(exc),
                    "errorType": type(exc).__name__,
                    "requestId": request_id,
                    "stackTrace": _handler_frames(exc),
                }
                # What the Python runtime prints for an unhandled exception, in the invocation's log stream.
                self.platform_line(
                    json.dumps(
                        {
                            "errorMessage": error["errorMessage"],
                            "errorType": error["errorType"],
                            "requestId": request_id,
                            "stackTrace": error["stackTrace"],
                        }
                    )
                )
                body, failed = json.dumps(error).encode(), True
        duration = (time.perf_counter() - started) * 1000
        self.invocations += 1
        init = f"\tInit Duration: {self.init_duration_ms:.2f} ms" if self.invocations == 1 else ""
        used = _memory_kb().get("VmHWM", 0) // 1024
        self.platform_line(f"END RequestId: {request_id}")
        self.platform_line(
            f"REPORT RequestId: {request_id}\tDuration: {duration:.2f} ms\tBilled Duration: {math.ceil(duration)} ms"
            f"\tMemory Size: {self.memory} MB\tMax Memory Used: {used} MB{init}{status}\t"
        )
        return body, failed

    @staticmethod
    def _marshal(result: Any, request_id: str) -> tuple[bytes, bool]:
        if isinstance(result, Iterator):
            # A streaming handler called with plain Invoke: Lambda buffers the streamed bytes into the response.
            body = b"".join(result)
            return body, len(body) > MAX_PAYLOAD
        try:
            body = json.dumps(result, default=_decimal_default).encode()
        except (TypeError, ValueError) as exc:
            error = {"errorMessage": f"Unable to marshal response: {exc}", "errorType": "Runtime.MarshalError"}
            return json.dumps({**error, "requestId": request_id, "stackTrace": []}).encode(), True
        if len(body) > MAX_PAYLOAD:
            error = {
                "errorMessage": f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload size "
                f"({MAX_PAYLOAD} bytes).",
                "errorType": "Function.ResponseSizeTooLarge",
            }
            return json.dumps(error).encode(), True
        return body, False

    def call_raw(self, event: Any, request_id: str) -> Any:
        """The handler's own return value (a streaming handler's iterator included), for stream_transport."""
        if self.import_error is not None:
            raise RuntimeError(self.import_error["errorMessage"])
        context = LambdaContext(
            request_id=request_id, function_name=self.name, memory_mb=self.memory, timeout_s=self.timeout
        )
        return self._timed_handler(event, context)

    def _timed_handler(self, event: Any, context: Any) -> Any:
        assert self.handler is not None
        started = time.thread_time()
        try:
            return self.handler(event, context)
        finally:
            self.handler_cpu_s += time.thread_time() - started

    def stats(self) -> dict[str, Any]:
        memory = _memory_kb()
        return {
            "function_name": self.name,
            "pid": os.getpid(),
            # This process's own peak (VmHWM): ru_maxrss survives exec, so it would report the parent's size at fork.
            "peak_rss_kb": memory.get("VmHWM", 0),
            "rss_kb": memory.get("VmRSS", 0),
            "invocations": self.invocations,
            "init_duration_ms": round(self.init_duration_ms, 3),
            "log_stream": os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
            "handler_cpu_ms": round(self.handler_cpu_s * 1000, 3),
        }


def _memory_kb() -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of this process, in KiB; empty where /proc is not there."""
    found: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                found[name] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return found


def _aws_error(handler: FastHandler, status: int, error_type: str, message: str) -> None:
    body = json.dumps({"Type": "User", "message": message}).encode()
    headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", error_type)]
    handler.send_bytes(status, [*headers, ("x-amzn-RequestId", str(uuid.uuid4()))], body)


def _make_handler(worker: _Worker, names: tuple[str, ...]) -> type[FastHandler]:
    class InvokeHandler(FastHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server dispatches on this name
            if self.path == STATS_PATH:
                self.send_bytes(200, [("Content-Type", "application/json")], json.dumps(worker.stats()).encode())
            else:
                _aws_error(self, 404, "UnknownOperationException", "Unknown operation")

        def do_POST(self) -> None:  # noqa: N802 - http.server dispatches on this name
            path = urllib.parse.urlsplit(self.path).path
            if path.startswith(STREAM_PREFIX) and path.endswith(STREAM_SUFFIX):
                self._stream(urllib.parse.unquote(path[len(STREAM_PREFIX) : -len(STREAM_SUFFIX)]))
                return
            if not (path.startswith(INVOKE_PREFIX) and path.endswith("/invocations")):
                _aws_error(self, 404, "UnknownOperationException", "Unknown operation")
                return
            target = urllib.parse.unquote(path[len(INVOKE_PREFIX) : -len("/invocations")])
            if not any(target == name or target.endswith(f"function:{worker.name}") for name in names):
                self.read_body(MAX_PAYLOAD * 2)
                _aws_error(self, 404, "ResourceNotFoundException", f"Function not found: {target}")
                return
            try:
                payload = self.read_body(MAX_PAYLOAD)
            except Exception:
                _aws_error(self, 413, "RequestTooLargeException", "Request must be smaller than 6291456 bytes")
                self.close_connection = True
                return
            request_id = str(uuid.uuid4())
            invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
            base = [("x-amzn-RequestId", request_id), ("X-Amz-Executed-Version", "$LATEST")]
            if invocation_type == "DryRun":
                self.send_bytes(204, base, b"")
                return
            try:
                event = json.loads(payload) if payload.strip() else {}
            except ValueError:
                _aws_error(self, 400, "InvalidRequestContentException", "Could not parse request body into json")
                return
            if not worker.busy.acquire(blocking=False):
                # The pool in the parent sends one invocation at a time; a second one here is a bug, refused loudly.
                _aws_error(self, 429, "TooManyRequestsException", "This execution environment is busy")
                return
            try:
                if invocation_type == "Event":
                    self.send_bytes(202, base, b"")  # accepted; the caller does not wait for the handler
                    worker.invoke(event, request_id)
                    return
                body, failed = worker.invoke(event, request_id)
                headers = [*base, ("Content-Type", "application/json")]
                if failed:
                    headers.append(("X-Amz-Function-Error", "Unhandled"))
                    if worker.timed_out:
                        headers.append(("X-Bulwark-Environment", "discarded"))
                self.send_bytes(200, headers, body)
            finally:
                worker.busy.release()
                if worker.timed_out:
                    # Lambda discards an environment whose invocation timed out; the next invoke gets a fresh init.
                    os._exit(0)

        def _stream(self, target: str) -> None:
            """InvokeWithResponseStream (stream_transport): pieces go out as the handler yields them."""
            if not any(target == name or target.endswith(f"function:{worker.name}") for name in names):
                self.read_body(MAX_PAYLOAD * 2)
                _aws_error(self, 404, "ResourceNotFoundException", f"Function not found: {target}")
                return
            try:
                event = json.loads(self.read_body(MAX_PAYLOAD) or b"{}")
            except ValueError:
                _aws_error(self, 400, "InvalidRequestContentException", "Could not parse request body into json")
                return
            request_id = str(uuid.uuid4())
            # A buffered invocation's answer goes out before it lets go of the environment: wait that instant out.
            if not worker.busy.acquire(timeout=1.0):
                _aws_error(self, 429, "TooManyRequestsException", "This execution environment is busy")
                return
            worker.platform_line(f"START RequestId: {request_id} Version: $LATEST")
            started = time.perf_counter()

            def failed(exc: BaseException) -> None:
                worker.platform_line(
                    json.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__, "requestId": request_id})
                )

            def done() -> None:
                duration = (time.perf_counter() - started) * 1000
                worker.invocations += 1
                worker.platform_line(f"END RequestId: {request_id}")
                worker.platform_line(
                    f"REPORT RequestId: {request_id}\tDuration: {duration:.2f} ms"
                    f"\tBilled Duration: {math.ceil(duration)} ms\tMemory Size: {worker.memory} MB"
                    f"\tMax Memory Used: {_memory_kb().get('VmHWM', 0) // 1024} MB\t"
                )
                worker.busy.release()

            serve_stream_invocation(
                self,
                lambda: worker.call_raw(event, request_id),
                request_id=request_id,
                timeout=worker.timeout,
                on_error=failed,
                on_done=done,
            )

    return InvokeHandler


def _exit_with_parent(parent: int) -> None:
    # Belt and braces with PR_SET_PDEATHSIG: a worker must never outlive the stack that started it.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--logical-id", required=True)
    parser.add_argument("--arn", default="")
    parser.add_argument("--code-dir", required=True)
    parser.add_argument("--handler", required=True)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--memory", type=int, default=128)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, default=0)
    args = parser.parse_args(argv)
    if args.parent_pid:
        threading.Thread(target=_exit_with_parent, args=(args.parent_pid,), daemon=True).start()
    worker = _Worker(args)  # the cold start: import the handler once, before the first request
    names = (args.name, args.arn) if args.arn else (args.name,)
    server = QuietServer(("127.0.0.1", args.port), _make_handler(worker, names))
    ready = {READY_KEY: True, "port": server.server_address[1], "pid": os.getpid(), "init_ms": worker.init_duration_ms}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ------------------------------------------------------------------------------------------------ the parent's side


class WorkerError(RuntimeError):
    """A worker could not start or stopped answering."""


class InvokeResult:
    __slots__ = ("function_error", "headers", "payload", "status")

    def __init__(
        self,
        status: int,
        payload: bytes,
        function_error: str | None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.payload = payload
        self.function_error = function_error
        self.headers = headers or []  # the Invoke API's response headers, for the router to pass on

    @property
    def error_type(self) -> str | None:
        """The Invoke API's own error (``x-amzn-ErrorType``), e.g. TooManyRequestsException; None on success."""
        for key, value in self.headers:
            if key.lower() == "x-amzn-errortype":
                return value.split(":", 1)[0]
        return None


LineSink = Callable[[str, str, str], None]  # (function name, "stdout" | "stderr", line)


class WorkerProcess:
    """Spawn and talk to one worker. Spawn from the thread that will outlive it (PR_SET_PDEATHSIG is per thread)."""

    def __init__(
        self,
        *,
        name: str,
        logical_id: str,
        arn: str,
        code_dir: Path,
        handler: str,
        timeout: int,
        memory: int,
        environment: Mapping[str, str],
        on_line: LineSink | None = None,
        port: int = 0,
    ) -> None:
        self.name = name
        self.logical_id = logical_id
        self.arn = arn
        self._argv = [
            sys.executable,
            "-m",
            "bulwark_dev.local.lambda_worker",
            f"--name={name}",
            f"--logical-id={logical_id}",
            f"--arn={arn}",
            f"--code-dir={code_dir}",
            f"--handler={handler}",
            f"--timeout={timeout}",
            f"--memory={memory}",
            f"--parent-pid={os.getpid()}",
            f"--port={port}",
        ]
        self.timeout = timeout
        self._env = dict(environment)
        self._on_line = on_line
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._early_output: list[str] = []
        self.port = 0
        self._pool: ConnectionPool | None = None
        self._stop_lock = threading.Lock()
        self._pumps: list[threading.Thread] = []  # the threads copying the process's stdout and stderr, line by line

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self) -> None:
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self._argv,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=preexec_for_child(),  # noqa: PLW1509 - only calls prctl; see _proc
            start_new_session=True,  # Ctrl-C goes to the stack, which stops workers in order
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream, label), daemon=True, name=f"{self.name}-{label}")
            for stream, label in ((self._proc.stdout, "stdout"), (self._proc.stderr, "stderr"))
        ]
        for pump in self._pumps:
            pump.start()

    def _pump(self, stream: IO[bytes], label: str) -> None:
        for raw in stream:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not self._ready.is_set() and label == "stdout" and READY_KEY in line:
                try:
                    self.port = int(json.loads(line)["port"])
                except (ValueError, KeyError):
                    continue
                self._pool = ConnectionPool("127.0.0.1", self.port)
                self._ready.set()
                continue
            if not self._ready.is_set():
                self._early_output.append(line)
                del self._early_output[:-30]
            if self._on_line is not None:
                self._on_line(self.name, label, line)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self._proc is None or self._proc.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(self._early_output[-20:])
                raise WorkerError(f"Lambda worker for {self.name} did not start:\n{tail}")

    def invoke(self, payload: bytes, timeout: float | None = None) -> InvokeResult:
        """Invoke synchronously; TimeoutError if no answer within ``timeout`` (default: the function timeout + 2 s)."""
        response = self.forward("POST", f"{INVOKE_PREFIX}{self.name}/invocations", payload, {}, timeout)
        return InvokeResult(
            response.status, response.body, response.header("X-Amz-Function-Error"), headers=response.headers
        )

    def forward(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float | None = None
    ) -> Response:
        if self._pool is None:
            raise WorkerError(f"Lambda worker for {self.name} is not running")
        return self._pool.request(method, path, body, headers, timeout or self.timeout + 2.0)

    def stats(self) -> dict[str, Any]:
        response = self.forward("GET", STATS_PATH, None, {}, 5.0)
        result: dict[str, Any] = json.loads(response.body)
        return result

    def stop(self) -> None:
        """Stop by PID; safe to call twice, from two threads (the reaper and the stack's stop may race)."""
        with self._stop_lock:
            proc, self._proc = self._proc, None
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        if proc is not None:
            stop_process(proc, timeout=3.0)
            # The process is gone, so its pipes end: let the pumps write its last lines (a REPORT, an audit record)
            # before the pipes are closed under them.
            for pump in self._pumps:
                if pump is not threading.current_thread():
                    pump.join(timeout=2.0)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


if __name__ == "__main__":
    main()
