"""pydantic models of the API Gateway events the functions receive (REST API, v1 payloads): the authorizer's
REQUEST event here, the validator's proxy event in bulwark.api.proxy_event (each function builds only its own
models)."""

from typing import Any

from pydantic import BaseModel, ConfigDict


class ApiGatewayModel(BaseModel):
    # API Gateway adds fields over time; we read what we need and ignore the rest.
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class Identity(ApiGatewayModel):
    # The AWS field name; a default address for a missing field, not a bind address.
    sourceIp: str = "0.0.0.0"  # noqa: N815, S104  # nosec B104
    userAgent: str | None = None  # noqa: N815


class RequestContext(ApiGatewayModel):
    requestId: str = ""  # noqa: N815
    stage: str = ""
    resourcePath: str = ""  # noqa: N815
    httpMethod: str = ""  # noqa: N815
    apiId: str = ""  # noqa: N815
    accountId: str = ""  # noqa: N815
    identity: Identity = Identity()
    authorizer: dict[str, Any] | None = None


def lower_keys(headers: dict[str, str] | None) -> dict[str, str]:
    return {k.lower(): v for k, v in (headers or {}).items()}


class AuthorizerRequestEvent(ApiGatewayModel):
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
