"""API Gateway event models: hostile or malformed events become contract errors, never 5xx."""

import pytest


def test_a_malformed_base64_body_is_a_400_not_a_500() -> None:
    from bulwark.api.proxy_event import ProxyEvent
    from bulwark.errors import InvalidJson

    with pytest.raises(InvalidJson):
        ProxyEvent(body="%%%not base64%%%", isBase64Encoded=True).body_bytes()
