"""JwtVerifier.verify() latency with warm JWKS cache (in-process, no network), p50/p99 per algorithm.

Run: python bench/authorizer_jwt_bench.py [--n 2000]
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import statistics
import time
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bulwark.auth.jwks import JwksCache
from bulwark.auth.jwt_verify import JwtVerifier
from bulwark.policy import IssuerConfig

ISSUER = "https://issuer.example.com"
URL = ISSUER + "/jwks.json"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    n = rsa_key.public_key().public_numbers().n
    ecn = ec_key.public_key().public_numbers()
    jwks: dict[str, Any] = {
        "keys": [
            {"kty": "RSA", "kid": "r", "n": b64u(n.to_bytes(256, "big")), "e": "AQAB"},
            {
                "kty": "EC",
                "kid": "e",
                "crv": "P-256",
                "x": b64u(ecn.x.to_bytes(32, "big")),
                "y": b64u(ecn.y.to_bytes(32, "big")),
            },
        ]
    }
    body = json.dumps(jwks).encode()
    cfg = IssuerConfig(
        name="bench", issuer=ISSUER, audience=("api",), jwks_url=URL, algorithms=("RS256", "PS256", "ES256")
    )
    verifier = JwtVerifier([cfg], JwksCache(fetch=lambda url, timeout: body))
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "api", "sub": "u", "iat": now, "exp": now + 3600, "scope": "a b c"}

    print(f"verify() warm, n={args.n} per row, Python {platform.python_version()}\n")
    print("| alg | p50 µs | p99 µs |")
    print("|---|---:|---:|")
    for alg, key, kid in (("RS256", rsa_key, "r"), ("PS256", rsa_key, "r"), ("ES256", ec_key, "e")):
        token = pyjwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
        for _ in range(50):
            verifier.verify(token)
        samples = []
        for _ in range(args.n):
            t0 = time.perf_counter_ns()
            verifier.verify(token)
            samples.append((time.perf_counter_ns() - t0) / 1000)
        q = statistics.quantiles(samples, n=100)
        print(f"| {alg} | {q[49]:.0f} | {q[98]:.0f} |")


if __name__ == "__main__":
    main()
