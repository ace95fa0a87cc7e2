"""Where the policy in force comes from, and the one rule for taking a new one.

Two sources: the policy file (the layer's, or BULWARK_POLICY_FILE under `bulwark local`), always there, and, when the
function names an AppConfig profile (BULWARK_POLICY_APPCONFIG_*), the document deployed there, which wins once one is
deployed. The rule, the same for both: a new document is validated first; one that fails is never used, the policy in
force stays, and the function says why in a log line (never the document: it can name secrets' ids and networks) and
a ``PolicyLoadFailed`` metric. A new policy taken into use is a log line and a ``PolicyUpdated`` metric.

Fail closed: with no good policy at all (the first read fails, or AppConfig is configured but cannot be reached at a
cold start) ``current()`` raises PolicyError and the functions refuse requests. Falling back to the layer's file when
AppConfig is down would quietly undo whatever an operator tightened there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from bulwark.policy import Policy, PolicyError, load_policy_file
from bulwark.settings import Settings

if TYPE_CHECKING:
    from bulwark.aws.appconfig import AppConfigPolicyProvider

_RETRY_SECONDS = 5.0  # AppConfig unreachable: the next try, not one per request


def _log() -> logging.Logger:
    # The function's Powertools Logger is the standard logger named after its service: same JSON lines, redacted.
    return logging.getLogger(os.environ.get("POWERTOOLS_SERVICE_NAME") or "bulwark")


def _metric(name: str, **properties: str) -> None:
    """One EMF document on its own: the policy is read outside any handler's Metrics (it may be read at init)."""
    from aws_lambda_powertools.metrics import MetricUnit
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

    service = os.environ.get("POWERTOOLS_SERVICE_NAME") or "bulwark"
    emf = AmazonCloudWatchEMFProvider(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or "Bulwark")
    emf.add_dimension(name="service", value=service)
    emf.add_metric(name=name, unit=MetricUnit.Count, value=1)
    for key, value in properties.items():
        emf.add_metadata(key=key, value=value)
    emf.flush_metrics()


def _refused(source: str, why: str, kept: str) -> None:
    _log().error(
        "new policy refused, the policy in force is kept", extra={"policy_source": source, "reason": why, "kept": kept}
    )
    _metric("PolicyLoadFailed", policy_source=source, reason=why)


def _taken(source: str, version: str) -> None:
    _log().info("new policy in force", extra={"policy_source": source, "policy_version": version})
    _metric("PolicyUpdated", policy_source=source, policy_version=version)


def _why(exc: Exception) -> str:
    """Which fields failed and how, without the values (pydantic's messages quote the input)."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['type']}" for e in exc.errors())[
            :500
        ]
    if isinstance(exc, PolicyError):
        return str(exc).splitlines()[0][:300]  # file:line: field: message (a field name and line, not the document)
    return type(exc).__name__


@dataclass(frozen=True, slots=True)
class _Held:
    policy: Policy
    source: str  # "file" or "appconfig"
    version: str  # the file's mtime, or AppConfig's version label (else the document's digest)


class PolicySource:
    """The policy for this container. ``current(path)`` is called at most about once a second (policy.current_policy
    keeps the fast path); each call costs a stat and, once per cache period, an AppConfigData poll."""

    def __init__(self, settings: Settings | None = None, provider: AppConfigPolicyProvider | None = None) -> None:
        cfg = settings or Settings.from_env()
        self.ttl_seconds = cfg.policy_ttl_seconds
        self._profile = cfg.policy_appconfig[2] if cfg.policy_appconfig else ""
        if provider is None and cfg.policy_appconfig is not None:
            from bulwark.aws import clients
            from bulwark.aws.appconfig import AppConfigPolicyProvider

            app, env, _ = cfg.policy_appconfig
            provider = AppConfigPolicyProvider(app, env, clients.appconfigdata(), self.ttl_seconds)
        self._provider = provider
        self._lock = threading.Lock()
        self._in_force: _Held | None = None
        self._file: tuple[str, int, _Held | None] | None = None  # (path, mtime, its policy if it was good)
        self._document_seen: str | None = None  # digest of the last AppConfig document looked at, good or not
        self._retry_at = 0.0

    def current(self, path: str) -> Policy:
        with self._lock:
            file_policy = self._file_policy(path)
            held = self._from_appconfig(self._provider, file_policy) if self._provider is not None else None
            if held is None and file_policy is not None:
                held = file_policy
            if held is None:
                raise PolicyError(f"{path}: no usable policy (see the log for why)")
            if self._in_force is None or held.policy is not self._in_force.policy:
                if self._in_force is not None:
                    _taken(held.source, held.version)
                self._in_force = held
            return held.policy

    # ---------------------------------------------------------------------------------------------------- the file
    def _file_policy(self, path: str) -> _Held | None:
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError as exc:
            return self._file_failed(path, f"cannot read the policy file ({exc.strerror})")
        if self._file is not None and self._file[0] == path and self._file[1] == mtime:
            good = self._file[2]
            return good if good is not None else self._last_good_file()
        try:
            policy = load_policy_file(path)
        except PolicyError as exc:
            self._file = (path, mtime, None)
            return self._file_failed(path, _why(exc))
        held = _Held(policy, "file", str(mtime))
        self._file = (path, mtime, held)
        return held

    def _file_failed(self, path: str, why: str) -> _Held | None:
        kept = self._last_good_file()
        if kept is None and self._in_force is None:
            _log().error("policy file unusable and no policy in force", extra={"policy_source": "file", "reason": why})
            return None
        _refused("file", why, kept.version if kept else "none")
        return kept

    def _last_good_file(self) -> _Held | None:
        held = self._in_force
        return held if held is not None and held.source == "file" else None

    # ----------------------------------------------------------------------------------------------- AppConfig
    def _from_appconfig(self, provider: AppConfigPolicyProvider, file_policy: _Held | None) -> _Held | None:
        """The AppConfig policy in force; None when nothing is deployed there (the file applies)."""
        from bulwark.aws.appconfig import GetParameterError

        now = time.monotonic()
        if now < self._retry_at:  # unreachable a moment ago: what was in force stays, and nothing stays nothing
            if self._in_force is None:
                raise PolicyError("the policy's AppConfig profile cannot be read")
            return self._in_force if self._in_force.source == "appconfig" else None
        try:
            document = provider.get(self._profile, max_age=self.ttl_seconds)
        except GetParameterError as exc:
            self._retry_at = now + min(_RETRY_SECONDS, self.ttl_seconds)
            if self._in_force is None:
                _log().error("AppConfig unreachable and no policy in force", extra={"reason": str(exc)[:200]})
                raise PolicyError("the policy's AppConfig profile cannot be read") from None
            _refused("appconfig", f"unreachable: {str(exc)[:200]}", self._in_force.version)
            return self._in_force if self._in_force.source == "appconfig" else None
        if not isinstance(document, bytes) or not document:
            return None  # nothing deployed: the file is the policy
        digest = hashlib.sha256(document).hexdigest()
        if digest == self._document_seen:
            held = self._in_force
            return held if held is not None and held.source == "appconfig" else None
        self._document_seen = digest
        version = provider.version_label or digest[:12]
        try:
            parsed = json.loads(document)
            policy = Policy.model_validate(parsed)
        except (ValueError, ValidationError) as exc:
            held = self._in_force if self._in_force is not None else file_policy
            if held is None:
                return None
            _refused("appconfig", _why(exc) if isinstance(exc, ValidationError) else "not JSON", held.version)
            return held if held.source == "appconfig" else None
        return _Held(policy, "appconfig", version)
