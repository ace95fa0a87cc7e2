"""Secrets Manager JSON 1.1: `POST /` with `X-Amz-Target: secretsmanager.GetSecretValue`."""

from __future__ import annotations

from tests.integration.wire.server import Reply, Request, WireServer, has_sigv4


def make(secrets: dict[str, str]) -> WireServer:
    def responder(request: Request) -> Reply:
        if not has_sigv4(request):
            return Reply.json({"__type": "UnrecognizedClientException", "message": "no signature"}, 400)
        if request.headers.get("x-amz-target") != "secretsmanager.GetSecretValue":
            return Reply.json({"__type": "UnknownOperationException"}, 400)
        secret_id = request.json().get("SecretId")
        if secret_id not in secrets:
            missing = {"__type": "ResourceNotFoundException", "message": "Secrets Manager can't find the secret."}
            return Reply.json(missing, 400, {"Content-Type": "application/x-amz-json-1.1"})
        body: dict[str, object] = {
            "ARN": f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{secret_id}-AbCdEf",
            "Name": secret_id,
            "VersionId": "v1",
            "SecretString": secrets[secret_id],
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": 1_700_000_000.0,
        }
        return Reply.json(body, 200, {"Content-Type": "application/x-amz-json-1.1"})

    return WireServer(responder).start()
