"""A tiny OAuth 2.0 / OIDC issuer for e2e tests: an RSA signing key and its JWKS served over HTTP on loopback."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "https://login.e2e.example/"
AUDIENCE = "bulwark-e2e"
KID = "e2e-key-1"


def _b64u(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class Issuer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pub = self.key.public_key().public_numbers()
        body = json.dumps(
            {"keys": [{"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256", "n": _b64u(pub.n), "e": _b64u(pub.e)}]}
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def policy_entry(self) -> dict[str, Any]:
        return {
            "name": "e2e-idp",
            "issuer": ISSUER,
            "audience": [AUDIENCE],
            "jwks_url": self.jwks_url,
            "algorithms": ["RS256"],
            "roles_claim": "scope",
            "role_map": {"bulwark:partner": "partner", "bulwark:dev": "developer"},
        }

    def token(self, *, scope: str = "bulwark:partner", sub: str = "user-42", ttl: int = 300, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + ttl, "scope": scope, **claims}
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": KID})

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
