"""AppConfig Data (REST-JSON, signing name ``appconfig``): ``POST /configurationsessions`` and ``GET
/configuration?configuration_token=...``, as the local stack's stand-in serves them (one implementation of sessions,
single-use tokens and "empty body: unchanged"), behind a SigV4 check with the test's secret. ``deploy`` puts a document
in force the way `bulwark policy push` does (a hosted version, then a deployment); the profile here has no validator,
so a document AppConfig would refuse can still reach the client (what the function's own checks are for).
"""

from __future__ import annotations

import json

from bulwark_dev.local.appconfig_service import (
    AppConfigError,
    AppConfigResources,
    AppConfigStandIn,
    Named,
    Profile,
    Strategy,
    error_response,
)
from bulwark_dev.local.aws_endpoint import signature_valid
from tests.integration.wire.server import Reply, Request, WireServer

APPLICATION, ENVIRONMENT, PROFILE, STRATEGY = "app-1", "env-1", "profile-1", "strategy-1"
SECRET = "wire-test-secret"


def stand_in() -> AppConfigStandIn:
    resources = AppConfigResources(
        Named(APPLICATION, "bulwark-test-policy"),
        (Named(ENVIRONMENT, "live"),),
        (Profile(PROFILE, "policy", ()),),
        (Strategy(STRATEGY, "bulwark-test-policy-all-at-once", 0, 0, 100.0),),
    )
    return AppConfigStandIn([resources])


def make(service: AppConfigStandIn) -> WireServer:
    def responder(request: Request) -> Reply:
        if not signature_valid(request.method, request.path, request.headers, request.body, SECRET):
            return Reply.json({"Message": "signature"}, 403, {"x-amzn-ErrorType": "InvalidSignatureException"})
        try:
            answer = service.route(request.method, request.path, request.headers, request.body).answer()
        except AppConfigError as exc:
            answer = error_response(exc.status, exc.code, exc.message, **exc.extra)
        return Reply(answer.status, dict(answer.headers), answer.body)

    return WireServer(responder).start()


def deploy(service: AppConfigStandIn, content: bytes, label: str = "") -> None:
    """A hosted configuration version of ``content`` and a deployment of it (complete at once)."""
    path = f"/applications/{APPLICATION}/configurationprofiles/{PROFILE}/hostedconfigurationversions"
    headers = {"Content-Type": "application/json", **({"VersionLabel": label} if label else {})}
    created = service.route("POST", path, headers, content).answer()
    version = dict(created.headers)["Version-Number"]
    body = json.dumps(
        {"ConfigurationProfileId": PROFILE, "DeploymentStrategyId": STRATEGY, "ConfigurationVersion": version}
    )
    service.route(
        "POST", f"/applications/{APPLICATION}/environments/{ENVIRONMENT}/deployments", {}, body.encode()
    ).answer()
