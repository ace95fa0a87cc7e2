"""Lambda's execution model for one function: environments that each run one invocation at a time.

An invocation takes an idle environment (the most recently used, as Lambda reuses warm ones) or starts a new one (a
process with its own init: a cold start), up to the function's reserved concurrency from ``template.yaml``. Beyond that
the Invoke call is throttled at once, as Lambda does: 429 ``TooManyRequestsException`` (never queued). Environments
idle for ``idle_timeout`` seconds are stopped, so a later invocation sees a cold start again. Each environment has its
own log stream, named as Lambda names them (``YYYY/MM/DD/[$LATEST]<32 hex>``).
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import queue
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulwark_dev.local.lambda_worker import InvokeResult, WorkerError, WorkerProcess
from bulwark_dev.local.stream_transport import ReleasingStream, open_event_stream

# Lambda's own default for an unreserved function is the account's pool (1,000); locally that would let a runaway
# loop start hundreds of processes. An unreserved function gets this cap instead (a documented local difference).
UNRESERVED_LOCAL_CAP = 32
DEFAULT_IDLE_TIMEOUT = 300.0  # Lambda keeps idle environments for minutes; tests shorten it to see a cold start
THROTTLE_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"

# (function name, "stdout" | "stderr", line, log stream)
StreamSink = Callable[[str, str, str, str], None]


def log_stream_name(now: dt.datetime | None = None) -> str:
    """A log stream name as Lambda makes one: the date, the version, then 32 hex digits."""
    day = (now or dt.datetime.now(dt.UTC)).strftime("%Y/%m/%d")
    return f"{day}/[$LATEST]{secrets.token_hex(16)}"


def throttled(message: str = "Rate Exceeded.") -> InvokeResult:
    """What the Lambda Invoke API answers when a function is at its concurrency limit."""
    body = json.dumps({"Type": "User", "message": message, "Reason": THROTTLE_REASON}).encode()
    return InvokeResult(
        429,
        body,
        None,
        headers=[
            ("Content-Type", "application/json"),
            ("x-amzn-ErrorType", "TooManyRequestsException"),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ],
    )


class Spawner:
    """Starts every environment from one long-lived thread: a child's parent-death signal (PR_SET_PDEATHSIG) fires
    when the *thread* that forked it exits, and request threads come and go."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[WorkerProcess, concurrent.futures.Future[None]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lambda-spawner")
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            process, done = job
            try:
                process.spawn()
            except BaseException as exc:  # handed to the caller that waits for it
                done.set_exception(exc)
            else:
                done.set_result(None)

    def spawn(self, process: WorkerProcess) -> None:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._jobs.put((process, done))
        done.result(timeout=30)

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=5)


@dataclass
class Environment:
    process: WorkerProcess
    log_stream: str
    started_at: float
    last_used: float = 0.0
    invocations: int = 0
    dead: bool = False


@dataclass
class PoolStats:
    started: int = 0  # environments started since the pool began (cold starts)
    recycled: int = 0  # stopped after their idle time
    discarded: int = 0  # dropped after a timeout or a crash
    throttled: int = 0  # Invoke calls answered 429
    in_flight: int = 0
    peak_in_flight: int = 0
    log_streams: list[str] = field(default_factory=list)


class FunctionPool:
    """The environments of one function."""

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
        reserved: int | None,
        spawner: Spawner,
        on_line: StreamSink | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.name = name
        self.logical_id = logical_id
        self.arn = arn
        self.timeout = timeout
        self.capacity = reserved if reserved is not None else UNRESERVED_LOCAL_CAP
        self.idle_timeout = idle_timeout
        self._code_dir = code_dir
        self._handler = handler
        self._memory = memory
        self._environment = dict(environment)
        self._spawner = spawner
        self._on_line = on_line
        self._lock = threading.Lock()
        self._idle: list[Environment] = []  # most recently used last
        self._all: list[Environment] = []
        self._slots = 0  # environments running or starting: never above capacity
        self.stats = PoolStats()
        self._closed = False
        # One thread per environment at most: the invocation runs there, so a caller's own timeout can return early.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.capacity, thread_name_prefix=f"invoke-{logical_id}"
        )

    # ------------------------------------------------------------------------------------------------- invocations
    def invoke(
        self, payload: bytes, timeout: float | None = None, headers: Mapping[str, str] | None = None
    ) -> InvokeResult:
        """One Invoke call: a warm environment, a cold one, or 429 when the function is at its concurrency.

        ``timeout`` bounds the caller's wait only (API Gateway's 29 s, a test's shorter one): as on AWS, an invocation
        the caller gave up on keeps running, and keeps its environment busy, until it ends or the function's own
        timeout stops it.
        """
        environment = self._acquire()
        if environment is None:
            return throttled()
        future = self._executor.submit(self._run, environment, payload, dict(headers or {}))
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"{self.name} did not answer within {timeout} s") from None

    def invoke_stream(self, payload: bytes, idle_timeout: float) -> ReleasingStream | None:
        """One InvokeWithResponseStream call (stream_transport): the environment stays busy until the stream ends or
        is closed, as a Lambda environment is for a streamed response. None when the function is at its concurrency.
        """
        environment = self._acquire()
        if environment is None:
            return None
        try:
            stream = open_event_stream(environment.process.port, self.name, payload, idle_timeout=idle_timeout)
        except BaseException:
            environment.dead = True
            self._release(environment)
            raise
        return ReleasingStream(stream, lambda: self._release(environment))

    def _run(self, environment: Environment, payload: bytes, headers: dict[str, str]) -> InvokeResult:
        try:
            response = environment.process.forward(
                "POST", f"/2015-03-31/functions/{self.name}/invocations", payload, headers, self.timeout + 5.0
            )
            # The environment exits after a timed-out invocation, as Lambda discards it: never hand it out again.
            environment.dead = response.header("X-Bulwark-Environment") == "discarded"
        except (TimeoutError, OSError):
            environment.dead = True  # an environment that stopped answering is never handed out again
            raise
        finally:
            self._release(environment)
        drop = ("content-length", "date", "connection", "x-bulwark-environment")
        keep = [(k, v) for k, v in response.headers if k.lower() not in drop]
        return InvokeResult(response.status, response.body, response.header("X-Amz-Function-Error"), headers=keep)

    def _acquire(self) -> Environment | None:
        with self._lock:
            if self._closed:
                raise WorkerError(f"the environments of {self.name} are stopped")
            while self._idle:
                environment = self._idle.pop()
                if not environment.dead and environment.process.alive():
                    self._enter()
                    return environment
                self._forget(environment)
            if self._slots >= self.capacity:
                self.stats.throttled += 1
                return None
            self._slots += 1
            self._enter()
        try:
            return self._start()
        except BaseException:
            with self._lock:
                self._slots -= 1
                self.stats.in_flight -= 1
            raise

    def _enter(self) -> None:
        self.stats.in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)

    def _start(self) -> Environment:
        stream = log_stream_name()
        env = dict(self._environment, AWS_LAMBDA_LOG_STREAM_NAME=stream)
        sink = self._on_line

        def on_line(name: str, label: str, line: str) -> None:
            if sink is not None:
                sink(name, label, line, stream)

        process = WorkerProcess(
            name=self.name,
            logical_id=self.logical_id,
            arn=self.arn,
            code_dir=self._code_dir,
            handler=self._handler,
            timeout=self.timeout,
            memory=self._memory,
            environment=env,
            on_line=on_line,
        )
        environment = Environment(process=process, log_stream=stream, started_at=time.monotonic())
        with self._lock:
            self._all.append(environment)
            self.stats.started += 1
            self.stats.log_streams.append(stream)
        try:
            self._spawner.spawn(process)
            process.wait_ready()
        except BaseException:
            process.stop()
            with self._lock:
                self._all.remove(environment)
            raise
        return environment

    def _release(self, environment: Environment) -> None:
        environment.invocations += 1
        environment.last_used = time.monotonic()
        with self._lock:
            self.stats.in_flight -= 1
            if environment.dead or self._closed or not environment.process.alive():
                self._forget(environment)
                self.stats.discarded += 1
                stop = True
            else:
                self._idle.append(environment)
                stop = False
        if stop:
            environment.process.stop()

    def _forget(self, environment: Environment) -> None:
        # Called with the lock held: the environment no longer counts against the function's concurrency.
        if environment in self._all:
            self._all.remove(environment)
            self._slots -= 1

    # ------------------------------------------------------------------------------------------------- life cycle
    def reap(self, now: float | None = None) -> int:
        """Stop environments idle for longer than ``idle_timeout``; returns how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = [e for e in self._idle if now - e.last_used >= self.idle_timeout]
            for environment in expired:
                self._idle.remove(environment)
                self._forget(environment)
            self.stats.recycled += len(expired)
        for environment in expired:
            environment.process.stop()
        return len(expired)

    def environments(self) -> list[Environment]:
        with self._lock:
            return list(self._all)

    def describe(self) -> dict[str, Any]:
        """Counts and, per live environment, what its process reports (pid, rss, peak rss, invocations)."""
        detail = []
        for environment in self.environments():
            try:
                detail.append({**environment.process.stats(), "log_stream": environment.log_stream})
            except (OSError, TimeoutError, WorkerError, ValueError):
                continue
        rss = sum(int(d.get("rss_kb", 0)) for d in detail)
        peak = sum(int(d.get("peak_rss_kb", 0)) for d in detail)
        return {
            "function_name": self.name,
            "reserved_concurrency": self.capacity,
            "environments": len(detail),
            "started": self.stats.started,
            "recycled": self.stats.recycled,
            "discarded": self.stats.discarded,
            "throttled": self.stats.throttled,
            "peak_concurrency": self.stats.peak_in_flight,
            "log_streams": list(self.stats.log_streams),
            # Sums over the live environments, for the memory figures; "pid" is the first one's (0 when none runs).
            "pid": int(detail[0]["pid"]) if detail else 0,
            "pids": [int(d["pid"]) for d in detail],
            "rss_kb": rss,
            "peak_rss_kb": peak,
            "invocations": sum(int(d.get("invocations", 0)) for d in detail),
            "handler_cpu_ms": sum(float(d.get("handler_cpu_ms", 0.0)) for d in detail),
            "init_duration_ms": max((float(d.get("init_duration_ms", 0.0)) for d in detail), default=0.0),
            "detail": detail,
        }

    def warm(self) -> None:
        """Start one environment ahead of traffic (what `bulwark local` does so its first request is not cold)."""
        environment = self._acquire()
        if environment is not None:
            self._release(environment)

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            everything = list(self._all)
            self._all.clear()
            self._idle.clear()
            self._slots = 0
        for environment in everything:
            environment.process.stop()
        self._executor.shutdown(wait=False, cancel_futures=True)
