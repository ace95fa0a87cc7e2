"""The validator's side of API Gateway: the proxy integration event (the authorizer's context is
bulwark.auth.context.CallerContext)."""

from bulwark.api.events import ApiGatewayModel, RequestContext, lower_keys


class ProxyEvent(ApiGatewayModel):
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
        return lower_keys(self.headers).get(name.lower())

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
