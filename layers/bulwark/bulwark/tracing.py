"""Subsegments for calls Bulwark makes itself (AWS over bulwark.aws_wire, HTTP upstreams), whatever the provider.

bulwark.observability.make_tracer registers the function's Tracer provider here when tracing is on; until then (and
locally, where tracing is off) `subsegment` yields None and costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_tracing: dict[str, Any] = {"recorder": None}


def trace_with(recorder: Any) -> None:
    """Record Bulwark's own calls with this provider (bulwark.xray's, or the X-Ray SDK recorder); None stops."""
    _tracing["recorder"] = recorder


@contextmanager
def subsegment(name: str, namespace: str) -> Iterator[Any]:
    """A subsegment around the block (namespace "aws" or "remote"), or None when tracing is off."""
    recorder = _tracing["recorder"]
    if recorder is None:
        yield None
        return
    with recorder.in_subsegment(name=name) as sub:
        if sub is not None:
            sub.namespace = namespace
        yield sub
