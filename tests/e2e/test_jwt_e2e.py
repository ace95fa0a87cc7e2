"""OAuth 2.0 bearer tokens through `bulwark local`: a configured issuer's JWTs work with the openai SDK, roles come
from the token's scope, and forged, expired or mis-addressed tokens get the one 401."""

from __future__ import annotations

import time
from typing import Any

import jwt
import openai
import pytest
import requests

from tests.e2e.oidc import AUDIENCE, ISSUER, Issuer

pytestmark = pytest.mark.e2e
CHAT = {"model": "demo-echo", "messages": [{"role": "user", "content": "hi from a token"}], "max_tokens": 16}


def test_a_valid_token_works_with_the_openai_sdk(local_stack: Any, oidc_issuer: Issuer) -> None:
    client = openai.OpenAI(base_url=local_stack.openai_base_url, api_key=oidc_issuer.token())
    r = client.chat.completions.create(model="demo-echo", messages=[{"role": "user", "content": "hi"}])
    content = r.choices[0].message.content
    assert content is not None and content.endswith("hi")


def test_roles_come_from_the_token_scope(local_stack: Any, oidc_issuer: Issuer) -> None:
    url = f"{local_stack.base_url}/v1/chat/completions"
    partner = oidc_issuer.token(scope="bulwark:partner", sub="p-1")
    body = {**CHAT, "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}
    r = requests.post(url, json=body, headers={"Authorization": f"Bearer {partner}"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].role"  # partners may not send system
    dev = oidc_issuer.token(scope="openid bulwark:dev", sub="d-1")
    assert requests.post(url, json=body, headers={"Authorization": f"Bearer {dev}"}, timeout=10).status_code == 200


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda i: i.token(ttl=-120), id="expired"),
        pytest.param(lambda i: i.token(aud="someone-else"), id="wrong-audience"),
        pytest.param(lambda i: i.token(iss=ISSUER + ".evil"), id="wrong-issuer"),
        pytest.param(lambda i: i.token(scope="email"), id="no-bulwark-role"),
        pytest.param(
            lambda i: jwt.encode(
                {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60, "iat": int(time.time())},
                "s" * 32,
                algorithm="HS256",
            ),
            id="hs256-forgery",
        ),
        pytest.param(lambda i: i.token()[:-6] + "AAAAAA", id="bad-signature"),
        pytest.param(lambda i: ".".join(i.token().split(".")[:2]) + ".", id="alg-none-style-empty-signature"),
    ],
)
def test_bad_tokens_get_the_one_401(local_stack: Any, oidc_issuer: Issuer, make: Any) -> None:
    r = requests.get(
        f"{local_stack.base_url}/v1/models", headers={"Authorization": f"Bearer {make(oidc_issuer)}"}, timeout=10
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_credentials"


def test_jwt_callers_are_rate_limited_per_subject(local_stack: Any, oidc_issuer: Issuer) -> None:
    token = oidc_issuer.token(sub="limited-subject")
    r = requests.post(
        f"{local_stack.base_url}/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-requests"] == "60"  # the partner role's limit, counted for this subject
