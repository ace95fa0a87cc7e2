"""A lean X-Ray provider for Powertools Tracer on Lambda.

Powertools' default provider is the X-Ray SDK, whose import (its async recorder pulls in asyncio and wrapt, its
sampler botocore) costs 35-40 ms of every cold start, and whose entities cost CPU on every request. On Lambda none of
that machinery is needed: Lambda owns the function segment and the sampling decision and hands both to the function
in ``_X_AMZN_TRACE_ID``; the function only sends subsegments, as JSON over UDP, to the daemon at
``AWS_XRAY_DAEMON_ADDRESS``. This module does exactly that, behind Powertools' own ``BaseProvider`` interface, so the
handlers keep ``@tracer.capture_lambda_handler``, annotations and metadata.

Subsegments are sent when they close, each with its parent's id (as the SDK's streaming does). Nothing is sent for an
unsampled request. Metadata and exception messages pass through the log redaction first: a trace is a log too.
"""

from __future__ import annotations

import contextvars
import json
import numbers
import os
import socket
import time
from collections.abc import AsyncGenerator, Generator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

_HEADER = b'{"format": "json", "version": 1}\n'
_MAX_DOCUMENT = 60_000  # a UDP datagram to the daemon; larger documents lose their metadata
_current: contextvars.ContextVar[Subsegment | None] = contextvars.ContextVar("bulwark_xray_subsegment", default=None)


def _clean(value: Any) -> Any:
    from bulwark.observability.logs import redact_value

    return redact_value(json.loads(json.dumps(value, default=str)))


class Subsegment(BaseSegment):
    """One X-Ray subsegment document (https://docs.aws.amazon.com/xray/latest/devguide/xray-api-segmentdocuments.html)."""

    def __init__(self, name: str, trace_id: str, parent_id: str, sampled: bool) -> None:
        self.name = name[:200]
        self.id = os.urandom(8).hex()
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.namespace: str | None = None
        self.start_time = time.time()
        self.end_time: float | None = None
        self.annotations: dict[str, Any] = {}
        self.metadata: dict[str, dict[str, Any]] = {}
        self.aws: dict[str, Any] = {}
        self.http: dict[str, dict[str, Any]] = {}
        self.fault = False
        self.error = False
        self.cause: dict[str, Any] | None = None

    # BaseSegment
    def close(self, end_time: int | None = None) -> None:
        self.end_time = float(end_time) if end_time is not None else time.time()

    def add_subsegment(self, subsegment: Any) -> None:
        return None  # children are sent on their own, naming this one as their parent

    def remove_subsegment(self, subsegment: Any) -> None:
        return None

    def put_annotation(self, key: str, value: str | numbers.Number | bool) -> None:
        # X-Ray indexes annotations with alphanumeric and underscore keys only; the SDK drops the others too.
        if key.replace("_", "").isalnum() and isinstance(value, str | int | float | bool):
            self.annotations[key] = value

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        self.metadata.setdefault(namespace, {})[key] = value

    def add_exception(self, exception: BaseException, stack: Any = None, remote: bool = False) -> None:
        self.fault = True
        from bulwark.observability.logs import redact

        self.cause = {
            "exceptions": [
                {"id": os.urandom(8).hex(), "type": type(exception).__name__, "message": redact(str(exception))[:500]}
            ]
        }

    # what the SDK's subsegments also offer, used by bulwark.aws.wire
    def set_aws(self, aws: dict[str, Any]) -> None:
        self.aws.update(aws)

    def put_http_meta(self, key: str, value: Any) -> None:
        section = "response" if key == "status" else "request"
        self.http.setdefault(section, {})[key] = value

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "id": self.id,
            "trace_id": self.trace_id,
            "parent_id": self.parent_id,
            "type": "subsegment",
            "start_time": self.start_time,
            "end_time": self.end_time if self.end_time is not None else time.time(),
        }
        if self.namespace:
            doc["namespace"] = self.namespace
        if self.annotations:
            doc["annotations"] = self.annotations
        if self.metadata:
            doc["metadata"] = _clean(self.metadata)
        if self.aws:
            doc["aws"] = self.aws
        if self.http:
            doc["http"] = self.http
        if self.fault:
            doc["fault"] = True
        if self.error:
            doc["error"] = True
        if self.cause:
            doc["cause"] = self.cause
        return doc


def _trace_context() -> tuple[str, str, bool] | None:
    """(root, parent, sampled) of the current invocation, from what the Lambda runtime sets."""
    header = os.environ.get("_X_AMZN_TRACE_ID", "")
    fields = dict(part.split("=", 1) for part in header.split(";") if "=" in part)
    root, parent = fields.get("Root"), fields.get("Parent")
    if not root or not parent:
        return None
    return root, parent, fields.get("Sampled") == "1"


class LambdaXRayProvider(BaseProvider):
    """Powertools Tracer provider: subsegments straight to the daemon, parented on Lambda's own segment."""

    def __init__(self, daemon_address: str | None = None) -> None:
        address = daemon_address or os.environ.get("AWS_XRAY_DAEMON_ADDRESS") or "127.0.0.1:2000"
        udp = address.split()[-1].removeprefix("udp:")  # "tcp:h:p udp:h:p" or "h:p"
        host, _, port = udp.rpartition(":")
        self.daemon = (host or "127.0.0.1", int(port or 2000))
        self._socket: socket.socket | None = None

    def _begin(self, name: str) -> Subsegment:
        parent = _current.get()
        if parent is not None:
            return Subsegment(name, parent.trace_id, parent.id, parent.sampled)
        context = _trace_context()
        if context is None:  # outside a traced invocation: recorded, never sent
            return Subsegment(name, "", "", False)
        root, parent_id, sampled = context
        return Subsegment(name, root, parent_id, sampled)

    def _end(self, sub: Subsegment) -> None:
        sub.close()
        if sub.sampled:
            self.emit(sub)

    def emit(self, sub: Subsegment) -> None:
        try:
            data = json.dumps(sub.document(), separators=(",", ":"), default=str).encode()
            if len(data) > _MAX_DOCUMENT:
                sub.metadata = {}
                data = json.dumps(sub.document(), separators=(",", ":"), default=str).encode()
            if self._socket is None:
                self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._socket.sendto(_HEADER + data, self.daemon)
        except (OSError, TypeError, ValueError):
            return  # tracing never fails a request

    @contextmanager
    def in_subsegment(self, name: str = "", **kwargs: Any) -> Generator[Subsegment, None, None]:
        sub = self._begin(name)
        token = _current.set(sub)
        try:
            yield sub
        except BaseException as exc:
            sub.add_exception(exc)
            raise
        finally:
            _current.reset(token)
            self._end(sub)

    @asynccontextmanager
    async def in_subsegment_async(self, name: str = "", **kwargs: Any) -> AsyncGenerator[Subsegment, None]:
        with self.in_subsegment(name, **kwargs) as sub:
            yield sub

    def put_annotation(self, key: str, value: str | numbers.Number | bool) -> None:
        sub = _current.get()
        if sub is not None:
            sub.put_annotation(key, value)

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        sub = _current.get()
        if sub is not None:
            sub.put_metadata(key, value, namespace)

    def patch(self, modules: Sequence[str]) -> None:
        if modules:
            raise ValueError("the lean provider patches no libraries: use the X-Ray SDK provider for that")

    def patch_all(self) -> None:
        raise ValueError("the lean provider patches no libraries: use the X-Ray SDK provider for that")
