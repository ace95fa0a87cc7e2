"""uv's bootstrap: the wheel for this machine is picked from a PEP 691 listing, hash-checked, and only `uv` unpacked.

The index is a real HTTP server on 127.0.0.1 answering the JSON simple API, serving a small wheel made for the test.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulwark_dev.fetch_uv import main, pick_wheel, platform_markers

VERSION = "9.9.9"
Index = tuple[str, dict[str, Any]]  # (simple API base URL, the state the server answers from)


def _wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"uv-{VERSION}.data/scripts/uv", "#!/bin/sh\necho uv-from-test\n")
        zf.writestr(f"uv-{VERSION}.data/scripts/uvx", "not this one\n")
        zf.writestr("uv/__init__.py", "")
    return buf.getvalue()


def _listing(wheel: bytes, *, sha256: str | None = None) -> dict[str, Any]:
    family, arch = platform_markers() or ("manylinux", "x86_64")
    tag = f"macosx_11_0_{arch}" if family == "macosx" else f"{family}_2_17_{arch}"
    digest = sha256 or hashlib.sha256(wheel).hexdigest()
    return {
        "meta": {"api-version": "1.1"},
        "name": "uv",
        "files": [
            {"filename": f"uv-{VERSION}.tar.gz", "url": "/files/sdist", "hashes": {"sha256": "0" * 64}},
            {"filename": f"uv-{VERSION}-py3-none-win_amd64.whl", "url": "/files/win", "hashes": {"sha256": "0" * 64}},
            {"filename": f"uv-{VERSION}-py3-none-{tag}.whl", "url": "/files/ours.whl", "hashes": {"sha256": digest}},
        ],
    }


@pytest.fixture
def index() -> Iterator[tuple[str, dict[str, Any]]]:
    wheel = _wheel()
    state: dict[str, Any] = {"listing": _listing(wheel), "json": True}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/simple/uv/":
                body = json.dumps(state["listing"]).encode()
                kind = "application/vnd.pypi.simple.v1+json" if state["json"] else "text/html"
            elif self.path == "/files/ours.whl":
                body, kind = wheel, "application/octet-stream"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", state
    finally:
        server.shutdown()
        server.server_close()


def test_the_machines_wheel_is_fetched_checked_and_only_uv_unpacked(
    index: tuple[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if platform_markers() is None:
        pytest.skip("no uv wheel platform for this machine")
    url, _ = index
    monkeypatch.setenv("UV_DEFAULT_INDEX", url)
    monkeypatch.delenv("UV_NO_INDEX", raising=False)
    assert main([VERSION, str(tmp_path / "uv")]) == 0
    uv = tmp_path / "uv" / "bin" / "uv"
    assert uv.read_text() == "#!/bin/sh\necho uv-from-test\n"
    assert uv.stat().st_mode & 0o111
    assert sorted(p.name for p in (tmp_path / "uv").rglob("*")) == ["bin", "uv"]


def test_a_wheel_whose_hash_differs_from_the_index_is_refused(
    index: tuple[str, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, state = index
    state["listing"] = _listing(_wheel(), sha256="f" * 64)
    monkeypatch.setenv("UV_DEFAULT_INDEX", url)
    monkeypatch.delenv("UV_NO_INDEX", raising=False)
    assert main([VERSION, str(tmp_path / "uv")]) == 2
    assert "differs from the index's" in capsys.readouterr().err
    assert not (tmp_path / "uv" / "bin" / "uv").exists()


def test_an_index_without_the_json_api_hands_over_to_pip(
    index: tuple[str, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, state = index
    state["json"] = False
    monkeypatch.setenv("UV_DEFAULT_INDEX", url)
    monkeypatch.delenv("UV_NO_INDEX", raising=False)
    assert main([VERSION, str(tmp_path / "uv")]) == 2
    assert "JSON simple API" in capsys.readouterr().err


def test_no_index_configured_leaves_it_to_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_NO_INDEX", "1")
    assert main([VERSION, str(tmp_path / "uv")]) == 2


def test_the_wheel_is_chosen_by_platform_and_architecture() -> None:
    files = [
        {"filename": "uv-1.0.0-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", "hashes": {"sha256": "a"}},
        {"filename": "uv-1.0.0-py3-none-musllinux_1_1_x86_64.whl", "hashes": {"sha256": "b"}},
        {"filename": "uv-1.0.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "hashes": {"sha256": "c"}},
        {"filename": "uv-1.0.0-py3-none-macosx_11_0_arm64.whl", "hashes": {"sha256": "d"}},
        {"filename": "uv-1.0.1-py3-none-manylinux_2_17_x86_64.whl", "hashes": {"sha256": "e"}},
    ]
    assert (pick_wheel(files, "1.0.0", ("manylinux", "x86_64")) or {})["hashes"]["sha256"] == "c"
    assert (pick_wheel(files, "1.0.0", ("manylinux", "aarch64")) or {})["hashes"]["sha256"] == "a"
    assert (pick_wheel(files, "1.0.0", ("musllinux", "x86_64")) or {})["hashes"]["sha256"] == "b"
    assert (pick_wheel(files, "1.0.0", ("macosx", "arm64")) or {})["hashes"]["sha256"] == "d"
    assert pick_wheel(files, "1.0.0", ("musllinux", "aarch64")) is None
