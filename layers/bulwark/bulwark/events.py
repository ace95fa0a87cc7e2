"""pydantic models of the API Gateway events the functions receive (REST API, v1 payloads)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    # API Gateway adds fields over time; we read what we need and ignore the rest.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Identity(_Lenient):
    # The AWS field name; a default address for a missing field, not a bind address.
    sourceIp: str = "0.0.0.0"  # noqa: N815, S104  # nosec B104
    userAgent: str | None = None  # noqa: N815


class RequestContext(_Lenient):
    requestId: str = ""  # noqa: N815
    stage: str = ""
    resourcePath: str = ""  # noqa: N815
    httpMethod: str = ""  # noqa: N815
    apiId: str = ""  # noqa: N815
    accountId: str = ""  # noqa: N815
    identity: Identity = Identity()
    authorizer: dict[str, Any] | None = None


def _lower(headers: dict[str, str] | None) -> dict[str, str]:
    return {k.lower(): v for k, v in (headers or {}).items()}


class AuthorizerRequestEvent(_Lenient):
    type: str = "REQUEST"
    methodArn: str  # noqa: N815
    resource: str = ""
    path: str = ""
    httpMethod: str = ""  # noqa: N815
    headers: dict[str, str] | None = None
    multiValueHeaders: dict[str, list[str]] | None = None  # noqa: N815
    queryStringParameters: dict[str, str] | None = None  # noqa: N815
    multiValueQueryStringParameters: dict[str, list[str]] | None = None  # noqa: N815
    pathParameters: dict[str, str] | None = None  # noqa: N815
    requestContext: RequestContext = RequestContext()  # noqa: N815

    def header_values(self, name: str) -> list[str]:
        """Every value of a header (case-insensitive), so a duplicated credential header cannot hide."""
        name = name.lower()
        values: list[str] = []
        for k, vs in (self.multiValueHeaders or {}).items():
            if k.lower() == name:
                values.extend(vs)
        if not values:
            values = [v for k, v in (self.headers or {}).items() if k.lower() == name]
        return values


class ProxyEvent(_Lenient):
    resource: str = ""
    path: str = ""
    httpMethod: str = ""  # noqa: N815
    headers: dict[str, str] | None = None
    queryStringParameters: dict[str, str] | None = None  # noqa: N815
    pathParameters: dict[str, str] | None = None  # noqa: N815
    requestContext: RequestContext = RequestContext()  # noqa: N815
    body: str | None = None
    isBase64Encoded: bool = False  # noqa: N815

    def header(self, name: str) -> str | None:
        return _lower(self.headers).get(name.lower())

    def body_bytes(self) -> bytes:
        if self.body is None:
            return b""
        if self.isBase64Encoded:
            import base64
            import binascii

            try:
                return base64.b64decode(self.body, validate=True)
            except (binascii.Error, ValueError):
                from bulwark.errors import InvalidJson

                raise InvalidJson() from None
        return self.body.encode("utf-8", "surrogatepass")


class CallerContext(_Lenient):
    """What the authorizer passes to the integration (all strings, as API Gateway delivers them). Never a credential."""

    principalId: str = ""  # noqa: N815
    principal: str = ""
    kind: str = ""
    key_id: str = ""
    subject: str = ""
    tenant: str = ""
    role: str = ""
    expires_at: str = ""
    refusal: str = ""
    refusal_retry_after: str = ""
    risk_score: str = "0"
    risk_action: str = "allow"
    limit_overrides: str = Field(default="", description="JSON of per-key limit overrides")
