"""The policy from AWS AppConfig, through Powertools' parameters utility, on the lean wire client.

Powertools' own ``AppConfigProvider`` makes a boto3 client: importing botocore is most of a function's cold start,
and the policy is read at the first request of every container. This provider speaks AppConfigData itself (REST-JSON,
SigV4 via bulwark.aws.wire) behind Powertools' ``BaseProvider``, so ``get(name, max_age=...)`` keeps Powertools'
cache semantics:

* ``StartConfigurationSession`` (POST /configurationsessions) gives the first token;
* ``GetLatestConfiguration`` (GET /configuration?configuration_token=...) gives the body and the next token. An empty
  body means "unchanged since your last call": the last body is returned again.

A profile with nothing deployed yet answers an empty body (or ResourceNotFound): ``get`` returns ``b""`` and the
caller uses the layer's file.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from typing import TYPE_CHECKING, Any

from bulwark.aws.sigv4 import canonical_query
from bulwark.aws.wire import AwsServiceError, AwsTransportError, _SignedClient, _subsegment, rest_json_error

__all__ = ["AppConfigDataClient", "AppConfigPolicyProvider", "GetParameterError"]

_MIN_POLL_SECONDS = 15  # AppConfigData's smallest RequiredMinimumPollIntervalInSeconds
_PARAMETERS = "aws_lambda_powertools.utilities.parameters"


def _powertools_parameters_base() -> types.ModuleType:
    """Powertools' ``parameters.base`` without the package's ``__init__``, which imports every provider and with them
    boto3 (0.3-0.9 s of a cold start, measured). Its submodules (base, exceptions, constants) import nothing of the
    SDK; they are loaded under a stand-in package that is then dropped, so a later ``import ...parameters`` still runs
    the real ``__init__`` and shares these same modules (one BaseProvider, one GetParameterError)."""
    if _PARAMETERS in sys.modules:
        return importlib.import_module(f"{_PARAMETERS}.base")
    from aws_lambda_powertools import utilities

    stand_in = types.ModuleType(_PARAMETERS)
    stand_in.__path__ = [f"{utilities.__path__[0]}/parameters"]
    sys.modules[_PARAMETERS] = stand_in
    try:
        return importlib.import_module(f"{_PARAMETERS}.base")
    finally:
        del sys.modules[_PARAMETERS]


if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters.base import BaseProvider
    from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
else:
    _base = _powertools_parameters_base()
    BaseProvider, GetParameterError = _base.BaseProvider, _base.GetParameterError


class AppConfigDataClient(_SignedClient):
    """The two AppConfigData operations, boto3-shaped (``start_configuration_session(**params)``)."""

    def start_configuration_session(self, **params: Any) -> dict[str, Any]:
        body = json.dumps(params, separators=(",", ":")).encode("utf-8")
        path = f"{self.endpoint.base_path}/configurationsessions"
        status, _, data = self._call("StartConfigurationSession", path, body, method="POST", query="")
        try:
            parsed = json.loads(data)
        except ValueError:
            raise AwsTransportError(f"unparseable answer (HTTP {status})") from None
        if not isinstance(parsed, dict) or not isinstance(parsed.get("InitialConfigurationToken"), str):
            raise AwsTransportError(f"unexpected answer (HTTP {status})")
        return parsed

    def get_latest_configuration(self, *, ConfigurationToken: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        path = f"{self.endpoint.base_path}/configuration"
        query = canonical_query([("configuration_token", ConfigurationToken)])
        status, headers, data = self._call("GetLatestConfiguration", path, b"", method="GET", query=query)
        token = headers.get("Next-Poll-Configuration-Token")
        if not token:
            raise AwsTransportError(f"answer without a next token (HTTP {status})")
        return {
            "NextPollConfigurationToken": token,
            "NextPollIntervalInSeconds": int(headers.get("Next-Poll-Interval-In-Seconds") or 0),
            "ContentType": headers.get("Content-Type") or "",
            "VersionLabel": headers.get("Version-Label") or "",
            "Configuration": data,
        }

    def _call(self, operation: str, path: str, body: bytes, *, method: str, query: str) -> tuple[int, Any, bytes]:
        headers = {"Content-Type": "application/json"} if body else {}
        with _subsegment(self._trace_name, operation, self.region) as trace:
            status, response_headers, data = self._with_retries(
                lambda: self._checked(self._send_once(path, headers, body, trace, method=method, query=query))
            )
        return status, response_headers, data

    @staticmethod
    def _checked(answer: tuple[int, Any, bytes]) -> tuple[int, Any, bytes]:
        status, headers, data = answer
        if status >= 300:
            raise rest_json_error(status, headers, data)
        return answer


class AppConfigPolicyProvider(BaseProvider):
    """Powertools parameters provider for one AppConfig application and environment; ``name`` is the profile.

    ``version_label`` is the label of the document last received (empty if AppConfig gave none)."""

    def __init__(self, application: str, environment: str, client: AppConfigDataClient, poll_seconds: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Powertools leaves it unannotated
        self.application = application
        self.environment = environment
        self.version_label = ""
        self._client = client
        self._poll_seconds = max(_MIN_POLL_SECONDS, poll_seconds)
        self._tokens: dict[str, str] = {}
        self._last: dict[str, bytes] = {}

    def _start(self, profile: str) -> str:
        answer = self._client.start_configuration_session(
            ApplicationIdentifier=self.application,
            EnvironmentIdentifier=self.environment,
            ConfigurationProfileIdentifier=profile,
            RequiredMinimumPollIntervalInSeconds=self._poll_seconds,
        )
        return str(answer["InitialConfigurationToken"])

    def _get(self, name: str, **sdk_options: Any) -> bytes:
        try:
            answer = self._latest(name)
        except AwsServiceError as exc:
            if exc.code != "ResourceNotFoundException":
                raise
            self._tokens.pop(name, None)
            return self._last.get(name, b"")  # nothing deployed (yet): the caller's default applies
        self._tokens[name] = answer["NextPollConfigurationToken"]
        if answer["Configuration"]:  # empty: unchanged since the last call
            self._last[name] = answer["Configuration"]
            self.version_label = answer["VersionLabel"]
        return self._last.get(name, b"")

    def _latest(self, profile: str) -> dict[str, Any]:
        token = self._tokens.get(profile)
        if token is None:
            token = self._start(profile)
        try:
            return self._client.get_latest_configuration(ConfigurationToken=token)
        except AwsServiceError as exc:
            if exc.code != "BadRequestException":
                raise
        # A token is good for one call and 24 hours: a refused one (expired, or used by a call whose answer was lost)
        # means a new session, whose first answer carries the whole current document.
        self._tokens.pop(profile, None)
        return self._client.get_latest_configuration(ConfigurationToken=self._start(profile))

    def _get_multiple(self, path: str, **sdk_options: Any) -> dict[str, str]:
        raise NotImplementedError("AppConfig profiles are read one at a time")
