"""JWKS fetching over real HTTP: a JWKS server on 127.0.0.1 (free port), the production fetcher (urllib), a hand-driven
cache clock. Covers fetch and cache, unknown-kid refresh limits, an endpoint that goes down (cached keys keep working
until they expire, then 503), redirects, oversized and slow responses, and one fetch under concurrent load.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from bulwark.auth.jwks import JwksCache, TokenRejectedError
from bulwark.auth.jwt_verify import JwtVerifier
from bulwark.errors import ServiceUnavailable
from bulwark.policy import IssuerConfig


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    n = key.public_key().public_numbers().n
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64u(n.to_bytes(256, "big")), "e": "AQAB"}


@dataclass
class JwksState:
    body: bytes = b'{"keys": []}'
    mode: str = "ok"  # ok | error | redirect | huge | slow
    hits: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class JwksServer:
    """A JWKS endpoint on loopback. `stop()` takes it down for real (connection refused afterwards)."""

    def __init__(self) -> None:
        self.state = JwksState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with state.lock:
                    state.hits[self.path] = state.hits.get(self.path, 0) + 1
                if state.mode == "error":
                    self._send(500, b'{"error": "boom"}')
                elif state.mode == "redirect" and self.path == "/jwks.json":
                    self.send_response(302)
                    self.send_header("Location", "/elsewhere.json")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif state.mode == "huge":
                    self._send(200, b'{"keys": [], "pad": "' + b"x" * 400_000 + b'"}')
                elif state.mode == "slow":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    try:
                        for byte in state.body:  # one byte at a time: each read is quick, the whole is not
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(0.01)
                    except OSError:
                        pass  # the client gave up, as it should
                else:
                    self._send(200, state.body)

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.running = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks.json"

    def hits(self, path: str = "/jwks.json") -> int:
        with self.state.lock:
            return self.state.hits.get(path, 0)

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)
            self.running = False


@pytest.fixture
def server() -> Iterator[JwksServer]:
    srv = JwksServer()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def key1() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def key2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def issuer_for(server: JwksServer) -> IssuerConfig:
    # A loopback JWKS over plain http: accepted only as `bulwark local` runs it.
    return IssuerConfig.model_validate(
        {
            "name": "local",
            "issuer": "https://issuer.example.com",
            "audience": ("bulwark-api",),
            "jwks_url": server.url,
            "jwks_cache_seconds": 300,
            "jwks_min_refresh_seconds": 30,
        },
        context={"local": True},
    )


def serve(server: JwksServer, *keys: tuple[rsa.RSAPrivateKey, str]) -> None:
    server.state.body = json.dumps({"keys": [rsa_jwk(k, kid) for k, kid in keys]}).encode()


def test_keys_are_fetched_over_http_and_cached(server: JwksServer, key1: rsa.RSAPrivateKey) -> None:
    serve(server, (key1, "k1"))
    cache, issuer = JwksCache(clock=Clock()), issuer_for(server)
    got = cache.key_for(issuer, "k1", "RS256")
    assert isinstance(got, rsa.RSAPublicKey)
    assert got.public_numbers() == key1.public_key().public_numbers()
    for _ in range(20):
        cache.key_for(issuer, "k1", "RS256")
    assert server.hits() == 1


def test_full_verification_against_the_http_jwks(server: JwksServer, key1: rsa.RSAPrivateKey) -> None:
    serve(server, (key1, "k1"))
    issuer = issuer_for(server)
    verifier = JwtVerifier([issuer], JwksCache(clock=Clock()))
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": "bulwark-api", "sub": "u1", "iat": now, "exp": now + 60}
    token = pyjwt.encode(claims, key1, algorithm="RS256", headers={"kid": "k1"})
    assert verifier.verify(token).subject == "u1"


def test_unknown_kid_refreshes_at_most_once_per_interval(
    server: JwksServer, key1: rsa.RSAPrivateKey, key2: rsa.RSAPrivateKey
) -> None:
    serve(server, (key1, "k1"))
    clock = Clock()
    cache, issuer = JwksCache(clock=clock), issuer_for(server)
    cache.key_for(issuer, "k1", "RS256")
    clock.now += 30
    for i in range(25):
        with pytest.raises(TokenRejectedError):
            cache.key_for(issuer, f"forged-{i}", "RS256")
    assert server.hits() == 2
    # The issuer rotates in a new key: found by the next refresh, one interval later.
    serve(server, (key1, "k1"), (key2, "k2"))
    with pytest.raises(TokenRejectedError):
        cache.key_for(issuer, "k2", "RS256")
    assert server.hits() == 2
    clock.now += 30
    assert cache.key_for(issuer, "k2", "RS256").public_numbers() == key2.public_key().public_numbers()
    assert server.hits() == 3


def test_endpoint_down_cached_keys_work_until_expiry_then_refusal(server: JwksServer, key1: rsa.RSAPrivateKey) -> None:
    serve(server, (key1, "k1"))
    clock = Clock()
    cache, issuer = JwksCache(clock=clock), issuer_for(server)
    cache.key_for(issuer, "k1", "RS256")
    server.stop()  # connection refused from now on
    clock.now += 100
    with pytest.raises(TokenRejectedError):  # a refresh is tried and fails; the key set is still fresh
        cache.key_for(issuer, "k-rotated", "RS256")
    clock.now += 199
    assert cache.key_for(issuer, "k1", "RS256") is not None
    clock.now += 1  # 300 s: the cache has expired
    with pytest.raises(ServiceUnavailable) as info:
        cache.key_for(issuer, "k1", "RS256")
    assert (info.value.status, info.value.code) == (503, "jwks_unavailable")
    assert info.value.headers["Retry-After"] == "30"


def test_server_error_then_recovery(server: JwksServer, key1: rsa.RSAPrivateKey) -> None:
    serve(server, (key1, "k1"))
    server.state.mode = "error"
    clock = Clock()
    cache, issuer = JwksCache(clock=clock), issuer_for(server)
    with pytest.raises(ServiceUnavailable):
        cache.key_for(issuer, "k1", "RS256")
    with pytest.raises(ServiceUnavailable):
        cache.key_for(issuer, "k1", "RS256")
    assert server.hits() == 1  # failures are rate limited too
    server.state.mode = "ok"
    clock.now += 30
    assert cache.key_for(issuer, "k1", "RS256") is not None
    assert server.hits() == 2


def test_redirects_are_not_followed(server: JwksServer, key1: rsa.RSAPrivateKey) -> None:
    serve(server, (key1, "k1"))
    server.state.mode = "redirect"
    with pytest.raises(ServiceUnavailable):
        JwksCache(clock=Clock()).key_for(issuer_for(server), "k1", "RS256")
    assert (server.hits(), server.hits("/elsewhere.json")) == (1, 0)


def test_oversized_response_is_refused(server: JwksServer) -> None:
    server.state.mode = "huge"
    with pytest.raises(ServiceUnavailable):
        JwksCache(clock=Clock()).key_for(issuer_for(server), "k1", "RS256")


def test_slow_response_is_abandoned_within_the_timeout(server: JwksServer, key1: rsa.RSAPrivateKey) -> None:
    serve(server, (key1, "k1"))  # ~700 bytes at 10 ms each: about 7 s if waited for
    server.state.mode = "slow"
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        JwksCache(clock=Clock(), timeout_seconds=0.5).key_for(issuer_for(server), "k1", "RS256")
    assert time.monotonic() - started < 2.0


def test_concurrent_cold_requests_make_one_fetch(server: JwksServer, key1: rsa.RSAPrivateKey) -> None:
    serve(server, (key1, "k1"))
    cache, issuer = JwksCache(clock=Clock()), issuer_for(server)
    start = threading.Barrier(12)
    results: list[bool] = []

    def call() -> None:
        start.wait()
        results.append(cache.key_for(issuer, "k1", "RS256") is not None)

    threads = [threading.Thread(target=call) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == [True] * 12
    assert server.hits() == 1
