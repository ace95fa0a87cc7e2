"""Subsegments for calls Bulwark makes itself (AWS over bulwark.aws.wire, HTTP upstreams), whatever the provider.

make_tracer registers the function's Tracer provider here when tracing is on; until then (and
locally, where tracing is off) `subsegment` yields None and costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Tracer

_tracing: dict[str, Any] = {"recorder": None}


def trace_with(recorder: Any) -> None:
    """Record Bulwark's own calls with this provider (bulwark.aws.xray's, or the X-Ray SDK recorder); None stops."""
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


class LeanTracer(Tracer):
    """Powertools' Tracer, minus its one reach for the X-Ray SDK: switching the SDK off when tracing is disabled
    (`sam local invoke`, POWERTOOLS_TRACE_DISABLED). Bulwark records through its own provider, the SDK is never used,
    and the layer does not ship it."""

    @staticmethod
    def _disable_tracer_provider() -> None:
        return None


def make_tracer() -> Tracer:
    """Powertools Tracer with bulwark.aws.xray's lean provider: the X-Ray SDK's import alone is 35-40 ms of a cold
    start, and Lambda already owns the segment and the sampling decision.

    Nothing is patched. The calls Bulwark makes record their own subsegments (`subsegment` above): AWS calls in
    bulwark.aws.wire, each upstream attempt in the guard (Bedrock and SageMaker included). Patching botocore at cold
    start alone imported it (~90 ms) in functions that never use it."""
    from bulwark.aws.xray import LambdaXRayProvider

    tracer = LeanTracer(auto_patch=False, provider=LambdaXRayProvider())
    if not tracer.disabled:
        trace_with(tracer.provider)
    return tracer
