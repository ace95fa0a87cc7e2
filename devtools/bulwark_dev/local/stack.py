"""The local stack: DynamoDB Local, one Lambda worker process per function, a Lambda Invoke endpoint, the demo model
and the API Gateway emulator, all read from ``template.yaml`` and stopped together.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import math
import os
import secrets
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from bulwark_dev.local._http import FastHandler, QuietServer, serve_in_thread
from bulwark_dev.local.appconfig_service import OPERATOR, AppConfigResources, AppConfigStandIn
from bulwark_dev.local.aws_endpoint import AwsEndpoint, Denial
from bulwark_dev.local.dynamodb_local import (
    DUMMY_CREDENTIALS,
    LOCAL_REGION,
    DynamoDBLocal,
    create_tables,
    database_credentials,
)
from bulwark_dev.local.environments import DEFAULT_IDLE_TIMEOUT, FunctionPool, Spawner
from bulwark_dev.local.gateway import ApiGatewayEmulator
from bulwark_dev.local.iam_roles import RoleBook
from bulwark_dev.local.lambda_worker import INVOKE_PREFIX, InvokeResult, WorkerError
from bulwark_dev.local.stream_transport import (
    STREAM_PREFIX,
    STREAM_SUFFIX,
    ReleasingStream,
    StreamFailed,
    StreamThrottled,
    serve_stream_invocation,
)
from bulwark_dev.local.template_model import DEFAULT_STACK_NAME, ApiSpec, TemplateModel, load_template

STATE_FILE = "local.json"
HMAC_KEY_FILE = "hmac.key"
# Variables a worker inherits from the stack's own environment: what a process needs to run, nothing that could
# carry the developer's AWS profile or credentials into a "Lambda".
_PASSTHROUGH_ENV = ("PATH", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "COVERAGE_PROCESS_START", "SYSTEMROOT")


class LocalStackError(RuntimeError):
    """The local stack could not start; the message says why and what to do."""


# --------------------------------------------------------------------------------------------------------------- logs


_PLATFORM_PREFIXES = ("START RequestId: ", "END RequestId: ", "REPORT RequestId: ", "INIT_START ")


def platform_record(text: str) -> dict[str, Any] | None:
    """A Lambda platform line as a record: the text as CloudWatch shows it, plus its request id and, for REPORT, the
    figures (durations in ms, memory in MB) so a reader need not parse tabs."""
    if not text.startswith(_PLATFORM_PREFIXES):
        return None
    kind = text.split(" ", 1)[0]
    record: dict[str, Any] = {"level": "INFO", "type": "platform", "platform": kind, "message": text.rstrip("\t")}
    if kind != "INIT_START":
        record["requestId"] = text.split("RequestId: ", 1)[1].split(maxsplit=1)[0]
    if kind == "REPORT":
        for part in text.split("\t")[1:]:
            name, _, value = part.partition(": ")
            number = value.split(" ", 1)[0]
            if name and number.replace(".", "", 1).isdigit():
                record[name.replace(" ", "_").lower()] = float(number)
            elif name == "Status":
                record["status"] = value
    return record


class LogSink:
    """Forward worker and gateway lines to a stream (prefixed by source) and to a JSONL file (one object a line)."""

    def __init__(self, stream: TextIO | None, path: Path | None, *, show_platform: bool = False) -> None:
        self._stream = stream
        self._file = path.open("a", encoding="utf-8") if path else None
        self.path = path
        self._show_platform = show_platform
        self._lock = threading.Lock()

    def line(self, source: str, label: str, text: str, log_stream: str = "") -> None:
        """One line an environment wrote to its log stream, stored with the stream's name as CloudWatch keeps it."""
        if not text.strip():
            return
        if (
            text.startswith("{")
            and text.endswith("}")
            and '"function_name"' in text
            and '"timestamp"' in text
            and '"type": "platform"' not in text
        ):
            # A complete Powertools line already says where and when: stored as written (plus its log stream), not
            # parsed and re-encoded (this runs in the gateway's process, on every line of every request).
            stored = f'{text[:-1]}, "log_stream": {json.dumps(log_stream)}}}' if log_stream else text
            with self._lock:
                if self._file is not None:
                    self._file.write(stored + "\n")
                    self._file.flush()
                if self._stream is not None:
                    self._stream.write(f"[{source}] {text}\n")
                    self._stream.flush()
            return
        record: dict[str, Any]
        platform = platform_record(text)
        if platform is not None:
            record = platform  # START / END / REPORT / INIT_START: the runtime's own lines, in Lambda's text format
        else:
            try:
                parsed = json.loads(text)
                record = parsed if isinstance(parsed, dict) else {"message": parsed}
            except ValueError:
                level = "ERROR" if label == "stderr" else "INFO"
                record = {"level": level, "message": text, "stream": label}
        record.setdefault("function_name", source)
        record.setdefault("timestamp", dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"))
        if log_stream:
            record["log_stream"] = log_stream
        platform_report = record.get("type") == "platform" and record.get("level") == "INFO"
        with self._lock:
            if self._file is not None:
                self._file.write(json.dumps(record, default=str) + "\n")
                self._file.flush()
            if self._stream is not None and (self._show_platform or not platform_report):
                self._stream.write(f"[{source}] {text}\n")
                self._stream.flush()

    def access(self, entry: dict[str, Any]) -> None:
        entry = {"function_name": "api-gateway", "level": "INFO", **entry}
        entry.setdefault("timestamp", dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"))
        with self._lock:
            if self._file is not None:
                self._file.write(json.dumps(entry, default=str) + "\n")
                self._file.flush()
            if self._stream is not None:
                extra = f" ({entry['errorType']})" if "errorType" in entry else ""
                self._stream.write(
                    f"[api-gateway] {entry['httpMethod']} {entry.get('resourcePath') or '-'} -> {entry['status']}"
                    f"{extra} {entry['latencyMs']:.1f} ms {entry['requestId']}\n"
                )
                self._stream.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# ---------------------------------------------------------------------------------------------------------- functions


class FunctionFleet:
    """Each function of the template as a pool of execution environments (see :mod:`.environments`), plus the Lambda
    Invoke endpoint that functions and the CLI call."""

    def __init__(
        self,
        template: TemplateModel,
        *,
        overrides: Mapping[str, str] | None = None,
        on_line: Callable[..., None] | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        per_function: Callable[[str], Mapping[str, str]] | None = None,
    ) -> None:
        self.template = template
        self._overrides = dict(overrides or {})
        self._per_function = per_function  # e.g. the IAM endpoint's credentials for each function's role
        self._on_line = on_line
        self.idle_timeout = idle_timeout
        self.pools: dict[str, FunctionPool] = {}
        self._spawner: Spawner | None = None
        self._warming: list[threading.Thread] = []
        self._warm_errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None
        # The Lambda Invoke endpoint (AWS_ENDPOINT_URL_LAMBDA) for every function and the CLI: the Lambda service.
        self._router = QuietServer(("127.0.0.1", 0), _make_router(self))
        self._router_thread: threading.Thread | None = None

    @property
    def lambda_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._router.server_address[1]}"

    def environment(self, logical_id: str) -> dict[str, str]:
        function = self.template.functions[logical_id]
        env = {key: os.environ[key] for key in _PASSTHROUGH_ENV if key in os.environ}
        env.update(function.environment)
        env.update(
            {
                # What the Lambda runtime sets (AWS_LAMBDA_LOG_STREAM_NAME is set per environment by its pool).
                "AWS_LAMBDA_FUNCTION_NAME": function.name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
                "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.runtime}",
                "LAMBDA_TASK_ROOT": str(function.code_dir),
                "_HANDLER": function.handler,
                "TZ": ":UTC",
                # Transport and credentials only: where AWS is, locally.
                "AWS_REGION": LOCAL_REGION,
                "AWS_DEFAULT_REGION": LOCAL_REGION,
                **DUMMY_CREDENTIALS,
                "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "AWS_ENDPOINT_URL_LAMBDA": self.lambda_endpoint,
                # The policy accepts plain-http loopback upstreams and JWKS only here (bulwark.policy.require_https).
                "BULWARK_LOCAL": "1",
                "POWERTOOLS_TRACE_DISABLED": "true",
                "PYTHONUNBUFFERED": "1",  # log lines reach the terminal as they are written
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        env.update(self._overrides)
        if self._per_function is not None:
            env.update(self._per_function(logical_id))
        return env

    def start(self, timeout: float = 30.0) -> None:
        self.start_router()
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Make each function's pool and start one environment of each in the background (joined by wait_ready),
        so a handler that cannot even import fails the start, not the first request."""
        self._spawner = Spawner()
        for logical_id, function in self.template.functions.items():
            self.pools[logical_id] = FunctionPool(
                name=function.name,
                logical_id=logical_id,
                arn=function.arn,
                code_dir=function.code_dir,
                handler=function.handler,
                timeout=function.timeout,
                memory=function.memory_size,
                environment=self.environment(logical_id),
                reserved=function.reserved_concurrency,
                spawner=self._spawner,
                on_line=self._on_line,
                idle_timeout=self.idle_timeout,
            )
        for pool in self.pools.values():
            thread = threading.Thread(target=self._warm, args=(pool,), daemon=True, name=f"warm-{pool.logical_id}")
            thread.start()
            self._warming.append(thread)
        self._reaper = threading.Thread(target=self._reap_loop, daemon=True, name="lambda-reaper")
        self._reaper.start()

    def _warm(self, pool: FunctionPool) -> None:
        try:
            pool.warm()
        except BaseException as exc:  # handed to the caller that waits for it
            self._warm_errors.append(exc)

    def _reap_loop(self) -> None:
        while not self._stopping.wait(min(1.0, max(0.05, self.idle_timeout / 4))):
            for pool in list(self.pools.values()):
                pool.reap()

    def start_router(self) -> None:
        self._router_thread = serve_in_thread(self._router, "lambda-api")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._warming:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._warm_errors:
            raise self._warm_errors[0]
        if any(thread.is_alive() for thread in self._warming):
            raise WorkerError(f"Lambda environments did not start within {timeout:.0f} s")

    def invoke(self, logical_id: str, payload: bytes, timeout: float) -> InvokeResult:
        return self.pools[logical_id].invoke(payload, timeout)

    def invoke_stream(self, logical_id: str, payload: bytes, idle_timeout: float) -> ReleasingStream:
        stream = self.pools[logical_id].invoke_stream(payload, idle_timeout)
        if stream is None:
            raise StreamThrottled(f"{logical_id} is at its reserved concurrency")
        return stream

    def pool_for(self, name_or_arn: str) -> FunctionPool | None:
        function = self.template.function_by_name(name_or_arn)
        return self.pools.get(function.logical_id) if function else None

    def recycle_idle(self) -> int:
        """Shut down every idle environment now, as Lambda does after their idle time (SIGTERM first, so a function's
        shutdown hook runs). Returns how many."""
        return sum(pool.reap(now=math.inf) for pool in self.pools.values())

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per function: environments running and started, throttles, peak concurrency, log streams, and sums over
        the live environments of rss_kb, peak_rss_kb, invocations and handler CPU ms (see FunctionPool.describe)."""
        return {logical_id: pool.describe() for logical_id, pool in self.pools.items()}

    def stop(self) -> None:
        self._stopping.set()
        if self._router_thread is not None:
            self._router.shutdown()
            self._router_thread = None
        self._router.server_close()
        for pool in self.pools.values():
            pool.stop()
        if self._spawner is not None:
            self._spawner.stop()
            self._spawner = None


def _make_router(fleet: FunctionFleet) -> type[FastHandler]:
    class LambdaApiHandler(FastHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server dispatches on this name
            path = urllib.parse.urlsplit(self.path).path
            if path.startswith(STREAM_PREFIX) and path.endswith(STREAM_SUFFIX):
                self._stream(urllib.parse.unquote(path[len(STREAM_PREFIX) : -len(STREAM_SUFFIX)]))
                return
            name = urllib.parse.unquote(path[len(INVOKE_PREFIX) :].split("/", 1)[0])
            body = self.read_body(16 * 1024 * 1024)
            pool = fleet.pool_for(name) if path.startswith(INVOKE_PREFIX) else None
            if pool is None:
                message = json.dumps({"Type": "User", "Message": f"Function not found: {name}"}).encode()
                headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ResourceNotFoundException")]
                self.send_bytes(404, headers, message)
                return
            forwarded = {
                key: value
                for key, value in self.headers.items()
                if key.lower().startswith("x-amz-") and key.lower() not in ("x-amz-date", "x-amz-security-token")
            }
            forwarded["Content-Type"] = "application/json"
            if forwarded.get("X-Amz-Invocation-Type", "").lower() == "event":
                # Asynchronous: Lambda queues the event and answers 202; an environment runs it when one is free.
                forwarded.pop("X-Amz-Invocation-Type")
                threading.Thread(target=_invoke_async, args=(pool, body, forwarded), daemon=True).start()
                self.send_bytes(202, [("x-amzn-RequestId", str(uuid.uuid4()))], b"")
                return
            try:
                result = pool.invoke(body, None, forwarded)
            except (TimeoutError, OSError, WorkerError) as exc:
                message = json.dumps({"Type": "Service", "Message": f"Lambda environment unavailable: {exc}"}).encode()
                headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ServiceException")]
                self.send_bytes(502, headers, message)
                return
            self.send_bytes(result.status, result.headers, result.payload)

        def _stream(self, name: str) -> None:
            """InvokeWithResponseStream: an environment of the function, held for the whole stream, which goes on to
            the caller piece by piece (re-framed; the caller going away closes the environment's stream)."""
            body = self.read_body(16 * 1024 * 1024)
            pool = fleet.pool_for(name)
            if pool is None:
                message = json.dumps({"Type": "User", "Message": f"Function not found: {name}"}).encode()
                headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ResourceNotFoundException")]
                self.send_bytes(404, headers, message)
                return
            try:
                stream = pool.invoke_stream(body, float(pool.timeout))
            except (TimeoutError, OSError, WorkerError, StreamFailed) as exc:
                message = json.dumps({"Type": "Service", "Message": f"Lambda environment unavailable: {exc}"}).encode()
                headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "ServiceException")]
                self.send_bytes(502, headers, message)
                return
            if stream is None:
                reason = {"Type": "User", "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"}
                headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", "TooManyRequestsException")]
                self.send_bytes(429, headers, json.dumps(reason).encode())
                return
            serve_stream_invocation(
                self,
                lambda: iter(stream),
                request_id=str(uuid.uuid4()),
                timeout=float(pool.timeout),
                on_error=lambda _exc: None,
            )

    return LambdaApiHandler


def _invoke_async(pool: FunctionPool, body: bytes, headers: dict[str, str]) -> None:
    # Lambda retries a throttled asynchronous event for hours; locally, for up to a minute.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError, OSError, WorkerError):
            if pool.invoke(body, None, headers).status != 429:
                return
        time.sleep(0.5)


# -------------------------------------------------------------------------------------------------------------- stack


def _ensure_hmac_key(state_dir: Path) -> Path:
    path = state_dir / HMAC_KEY_FILE
    with contextlib.suppress(FileExistsError):
        # Created once, owner-only: the keys made against this state stay valid across restarts.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return path


def _pick_api(template: TemplateModel) -> ApiSpec:
    with_routes = [api for api in template.apis.values() if api.routes]
    if not with_routes:
        raise LocalStackError(f"{template.path} has no Api events: nothing for the gateway to serve")
    return with_routes[0]


class LocalStack:
    def __init__(
        self,
        *,
        project_root: Path,
        port: int = 3000,
        policy_file: Path | None = None,
        template: Path | None = None,
        state_dir: Path | None = None,
        parameter_overrides: dict[str, str] | None = None,
        progress: TextIO | None = sys.stderr,
        log_stream: TextIO | None = sys.stdout,
        show_platform_logs: bool = False,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        enforce_iam: bool = True,
        function_environment: Mapping[str, str] | None = None,
        dynamodb: DynamoDBLocal | None = None,
    ) -> None:
        self.idle_timeout = idle_timeout
        # A running DynamoDB Local to share (tests: one per worker process instead of a JVM per stack): the stack
        # keeps its tables in a database of its own there, named by a fresh access key id, and leaves it running.
        # Without one, the stack starts its own and stops it.
        self._shared_dynamodb = dynamodb
        self.dynamodb_credentials = (
            database_credentials(f"stack{secrets.token_hex(8)}") if dynamodb is not None else dict(DUMMY_CREDENTIALS)
        )
        # Set in every function over the template's values (tests: e.g. a short BULWARK_POLICY_TTL_SECONDS).
        self.function_environment = dict(function_environment or {})
        # Every AWS call of a function is authorized against its role in the template (local/aws_endpoint.py).
        self.enforce_iam = enforce_iam
        self.aws: AwsEndpoint | None = None  # seconds an execution environment stays warm without an invocation
        self.project_root = project_root.resolve()
        self.port = port
        self.policy_file = policy_file.resolve() if policy_file else None
        self.template_path = (template or self.project_root / "template.yaml").resolve()
        self.state_dir = (state_dir or self.project_root / ".bulwark").resolve()
        self.parameter_overrides = dict(parameter_overrides or {})
        self._progress = progress
        self._log_stream = log_stream
        self._show_platform = show_platform_logs
        self.template: TemplateModel | None = None
        self.dynamodb: DynamoDBLocal | None = None
        self.fleet: FunctionFleet | None = None
        self.gateway: ApiGatewayEmulator | None = None
        self.logs: LogSink | None = None
        self._demo: Any = None
        self.hmac_key_file = self.state_dir / HMAC_KEY_FILE
        self.demo_model_url = ""
        self.started = False

    # ---------------------------------------------------------------------------------------------------- accessors
    @property
    def base_url(self) -> str:
        if self.gateway is None:
            raise LocalStackError("the local stack is not started")
        return self.gateway.base_url

    @property
    def lambda_endpoint(self) -> str:
        """The local Lambda Invoke API (what `bulwark invoke` and the functions' AWS_ENDPOINT_URL_LAMBDA call)."""
        if self.fleet is None:
            raise LocalStackError("the local stack is not started")
        return self.fleet.lambda_endpoint

    @property
    def dynamodb_endpoint(self) -> str:
        if self.dynamodb is None:
            raise LocalStackError("the local stack is not started")
        return self.dynamodb.endpoint_url

    def dynamodb_client(self) -> Any:
        """A boto3 client for this stack's tables (its database in DynamoDB Local)."""
        if self.dynamodb is None:
            raise LocalStackError("the local stack is not started")
        return self.dynamodb.client(self.dynamodb_credentials["AWS_ACCESS_KEY_ID"])

    @property
    def table_names(self) -> dict[str, str]:
        return self._template().table_names

    @property
    def log_file(self) -> Path | None:
        return self.logs.path if self.logs else None

    def _template(self) -> TemplateModel:
        if self.template is None:
            self.template = load_template(self.template_path, parameter_overrides=self.parameter_overrides)
        return self.template

    def cli_environment(self) -> dict[str, str]:
        """What the `bulwark` CLI needs to manage keys on this stack (tables, endpoint, region, dummy credentials)."""
        env: dict[str, str] = {}
        for function in self._template().functions.values():
            for key in ("BULWARK_KEYS_TABLE", "BULWARK_COUNTERS_TABLE"):
                if key in function.environment:
                    env.setdefault(key, function.environment[key])
        env.update(
            {
                "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_endpoint,
                "AWS_REGION": LOCAL_REGION,
                "AWS_DEFAULT_REGION": LOCAL_REGION,
                **self.dynamodb_credentials,
                "BULWARK_HMAC_SECRET_FILE": str(self.hmac_key_file),
                "BULWARK_LOCAL": "1",
            }
        )
        if self.policy_file:
            env["BULWARK_POLICY_FILE"] = str(self.policy_file)
        if self.aws is not None:
            # `bulwark policy push --stack bulwark-local` signs as the local operator (AppConfig's control plane only).
            operator = self.aws.credentials_for(OPERATOR)
            env.update(
                {
                    "BULWARK_LOCAL_STACK_NAME": DEFAULT_STACK_NAME,
                    "BULWARK_OPERATOR_ACCESS_KEY_ID": operator["AWS_ACCESS_KEY_ID"],
                    "BULWARK_OPERATOR_SECRET_ACCESS_KEY": operator["AWS_SECRET_ACCESS_KEY"],
                    "AWS_ENDPOINT_URL_APPCONFIG": operator["AWS_ENDPOINT_URL_APPCONFIG"],
                }
            )
        return env

    def _invoke(self, logical_id: str, payload: bytes, timeout: float) -> InvokeResult:
        if self.fleet is None:
            raise ConnectionRefusedError("the Lambda workers are stopped")
        return self.fleet.invoke(logical_id, payload, timeout)

    def _invoke_stream(self, logical_id: str, payload: bytes, idle_timeout: float) -> ReleasingStream:
        if self.fleet is None:
            raise ConnectionRefusedError("the Lambda workers are stopped")
        return self.fleet.invoke_stream(logical_id, payload, idle_timeout)

    @property
    def demo_server(self) -> Any:
        """The demo model server (its stream pace and length can be set: token_delay, repeat)."""
        return self._demo

    def worker_stats(self) -> dict[str, dict[str, Any]]:
        """Per function: its execution environments (started, running, throttles, peak concurrency, log streams) and
        sums over the running ones of rss_kb, peak_rss_kb (VmHWM), invocations; see FunctionPool.describe."""
        if self.fleet is None:
            raise LocalStackError("the local stack is not started")
        return self.fleet.stats()

    def _say(self, message: str) -> None:
        if self._progress is not None:
            self._progress.write(message + "\n")
            self._progress.flush()

    # ------------------------------------------------------------------------------------------------- start, stop
    def start(self) -> None:
        started = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.started = True
        self._say(f"Local stack ready in {time.monotonic() - started:.1f} s at {self.base_url}")

    def _start(self) -> None:
        template = self._template()
        api = _pick_api(template)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _ensure_hmac_key(self.state_dir)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        (self.state_dir / "logs").mkdir(exist_ok=True)
        self.logs = LogSink(
            self._log_stream, self.state_dir / "logs" / f"{stamp}.jsonl", show_platform=self._show_platform
        )
        if self.policy_file is not None and not self.policy_file.is_file():
            raise LocalStackError(f"policy file {self.policy_file} does not exist")

        # Bind the public port first, so a busy port fails before anything else starts.
        try:
            self.gateway = ApiGatewayEmulator(
                api,
                self._invoke,
                function_timeouts={k: float(f.timeout) for k, f in template.functions.items()},
                port=self.port,
                access_log=self.logs.access,
                invoke_stream=self._invoke_stream,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LocalStackError(f"port {self.port} is in use; choose another with --port") from exc
            raise

        if self._shared_dynamodb is not None:
            self.dynamodb = self._shared_dynamodb
        else:
            self._say(f"Starting DynamoDB Local (tables from {self.template_path.name}) ...")
            self.dynamodb = DynamoDBLocal(progress=self._progress)
            self.dynamodb.launch()  # the JVM boots while the workers import their handlers

        from bulwark_dev.local.demo_model import serve_demo_model

        self._demo, _ = serve_demo_model("127.0.0.1", 0)
        self.demo_model_url = f"http://127.0.0.1:{self._demo.server_address[1]}/v1"
        self._say(f"Demo model (an echo server, not a real model) at {self.demo_model_url}")

        overrides = {
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb.endpoint_url,
            "BULWARK_HMAC_SECRET_FILE": str(self.hmac_key_file),
            "BULWARK_DEMO_MODEL_URL": self.demo_model_url,
        }
        if self.policy_file is not None:
            overrides["BULWARK_POLICY_FILE"] = str(self.policy_file)
        overrides.update(self.function_environment)
        fleet = FunctionFleet(
            template,
            overrides=overrides,
            on_line=self.logs.line,
            idle_timeout=self.idle_timeout,
            per_function=self._aws_credentials,
        )
        self.fleet = fleet
        fleet.start_router()
        self.aws = self._start_aws_endpoint(fleet.lambda_endpoint)
        if self.enforce_iam:
            for logical_id in template.functions:
                self.aws.platform_check(logical_id)
        caps = ", ".join(
            f"{k} (up to {f.reserved_concurrency if f.reserved_concurrency is not None else 'unreserved'})"
            for k, f in template.functions.items()
        )
        self._say(f"Starting Lambda execution environments, one per invocation in flight: {caps} ...")
        fleet.spawn()

        self.dynamodb.wait_ready()
        create_tables(self.dynamodb_client(), template.tables, template.table_names)
        self._say(f"DynamoDB Local at {self.dynamodb.endpoint_url}; tables: {', '.join(template.table_names.values())}")
        fleet.wait_ready()
        self.gateway.start()
        routes = ", ".join(f"{r.method} {r.path}" for r in api.routes)
        self._say(f"API Gateway emulator for {api.logical_id} (stage {api.stage_name}): {routes}")
        self._write_state()

    def _aws_credentials(self, logical_id: str) -> Mapping[str, str]:
        if self.aws is None:
            raise LocalStackError("the AWS endpoint is not started")
        # The key-hash pepper comes from the Secrets Manager stand-in (the template's KeyHashSecret, whose value is
        # the stack's hmac.key), as deployed: through the role's GetSecretValue, not by reading the file.
        return {**self.aws.credentials_for(logical_id), "BULWARK_HMAC_SECRET_FILE": ""}

    def _local_secret_values(self) -> dict[str, Callable[[], str]]:
        """The key-hash secret the functions name (BULWARK_HMAC_SECRET_ID) holds this stack's hmac.key."""
        key_file = self.hmac_key_file
        names = {f.environment.get("BULWARK_HMAC_SECRET_ID") for f in self._template().functions.values()}
        return {name: (lambda: key_file.read_text(encoding="ascii").strip()) for name in names if name}

    def _start_aws_endpoint(self, lambda_url: str) -> AwsEndpoint:
        if self.dynamodb is None or self.logs is None:
            raise LocalStackError("the AWS endpoint starts after DynamoDB Local and the log sink")
        logs = self.logs

        def denied(denial: Denial) -> None:
            record = {
                "level": "ERROR",
                "message": f"AccessDenied: {denial.action} on {denial.resource} ({denial.reason})",
                "function": denial.function,
            }
            logs.line("aws-iam", "stderr", json.dumps(record))

        endpoint = AwsEndpoint(
            RoleBook(self.template_path, parameter_overrides=self.parameter_overrides),
            dynamodb_url=self.dynamodb.endpoint_url,
            dynamodb_access_key_id=self.dynamodb_credentials["AWS_ACCESS_KEY_ID"],
            lambda_url=lambda_url,
            state_dir=self.state_dir,
            on_denied=denied,
            enforce=self.enforce_iam,
            secret_values=self._local_secret_values(),
            secrets_dir=self.state_dir / "secrets",
            sagemaker_model_url=self.demo_model_url,
            appconfig=AppConfigStandIn(
                AppConfigResources.from_template(self.template_path, parameter_overrides=self.parameter_overrides)
            ),
        )
        endpoint.start()
        if self.enforce_iam:
            self._say(f"IAM enforced on every AWS call of the functions (roles from {self.template_path.name})")
        return endpoint

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "base_url": self.base_url,
            "dynamodb_endpoint": self.dynamodb_endpoint,
            "lambda_endpoint": self.lambda_endpoint,
            "demo_model_url": self.demo_model_url,
            "table_names": self.table_names,
            "log_file": str(self.log_file) if self.log_file else None,
            "environment": self.cli_environment(),
        }
        path = self.state_dir / STATE_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(state, indent=2) + "\n")
        temporary.replace(path)

    def stop(self) -> None:
        """Stop everything this stack started, in reverse order; safe to call twice."""
        if self.gateway is not None:
            with contextlib.suppress(Exception):
                self.gateway.stop()
            self.gateway = None
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None
        if self.aws is not None:
            self.aws.stop()
            self.aws = None
        if self._demo is not None:
            self._demo.shutdown()
            self._demo.server_close()
            self._demo = None
        if self.dynamodb is not None:
            if self.dynamodb is not self._shared_dynamodb:
                self.dynamodb.stop()
            else:  # the shared process runs on: this stack's tables go, as its own process would have
                self._drop_tables()
            self.dynamodb = None
        state = self.state_dir / STATE_FILE
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            if json.loads(state.read_text()).get("pid") == os.getpid():
                state.unlink()
        if self.logs is not None:
            self.logs.close()
        self.started = False

    def _drop_tables(self) -> None:
        with contextlib.suppress(Exception):  # best effort: a table the start never made, a process already gone
            client = self.dynamodb_client()
            existing = set(client.list_tables()["TableNames"])
            for name in self.table_names.values():
                if name in existing:
                    client.delete_table(TableName=name)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def read_local_state(state_dir: Path) -> dict[str, Any] | None:
    """The running local stack's ``local.json`` (for `bulwark keys` in another terminal), if its process is alive."""
    try:
        state: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return None  # left behind by a stack that was killed hard
    except PermissionError:
        pass
    return state


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, raise_interrupt)
    # Also when started from a shell that ignores SIGINT for background jobs: Ctrl-C must always stop the stack.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def run_until_interrupted(stack: LocalStack, *, progress: TextIO | None = sys.stderr) -> None:
    """Block until Ctrl-C or SIGTERM, then stop the stack (which must already be started). Main thread only."""
    try:
        with _sigterm_as_interrupt():
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        if progress is not None:
            progress.write("\nStopping the local stack ...\n")
            progress.flush()
    finally:
        stack.stop()
