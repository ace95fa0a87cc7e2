"""Fetch uv's wheel for this machine from the package index and unpack its binary (standard library only).

`./dev` runs this with the bare interpreter before anything is installed:
``python -S -m bulwark_dev.fetch_uv VERSION DEST`` leaves ``DEST/bin/uv``. It reads the index's JSON listing
(PEP 691) of ``uv``, picks the wheel whose platform tag fits this machine, checks the sha256 the index gives for it,
and extracts only the ``uv`` executable. The index is ``$UV_DEFAULT_INDEX`` (pip's ``index-url``, carried over by
``bulwark_dev.pip_to_uv``), else PyPI.

Why not ``pip install uv``: on a busy 2-core machine pip's own start-up and resolver cost about 2.5 s of CPU, which a
loaded machine turns into 20 s of waiting; this costs a fraction of that. Any failure here (an index without the JSON
API, an unknown platform) exits 2 and `./dev` falls back to pip.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

_JSON = "application/vnd.pypi.simple.v1+json"


def platform_markers() -> tuple[str, str] | None:
    """(platform family, architecture) as uv's wheel tags spell them, or None when unsure."""
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}.get(machine)
    if arch is None:
        return None
    if sys.platform == "darwin":
        return "macosx", "arm64" if arch == "aarch64" else "x86_64"
    if sys.platform.startswith("linux"):
        libc, _ = platform.libc_ver()
        return ("manylinux" if libc == "glibc" else "musllinux"), arch
    return None


def pick_wheel(files: list[dict[str, Any]], version: str, markers: tuple[str, str]) -> dict[str, Any] | None:
    family, arch = markers
    prefix = f"uv-{version}-"
    for entry in files:
        name = str(entry.get("filename", ""))
        if not (name.startswith(prefix) and name.endswith(".whl")):
            continue
        platform_tag = name[:-4].rsplit("-", maxsplit=1)[-1]
        if family in platform_tag and platform_tag.endswith(arch) and entry.get("hashes", {}).get("sha256"):
            return entry
    return None


def fetch(version: str, dest: Path, index: str) -> None:
    markers = platform_markers()
    if markers is None:
        raise RuntimeError(f"no uv wheel known for {sys.platform}/{platform.machine()}")
    listing_url = index.rstrip("/") + "/uv/"
    request = urllib.request.Request(listing_url, headers={"Accept": _JSON})  # noqa: S310 - the configured index
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310  # nosec B310
        if _JSON not in response.headers.get("Content-Type", ""):
            raise RuntimeError(f"{listing_url} does not speak the JSON simple API")
        listing = json.load(response)
    wheel = pick_wheel(listing.get("files", []), version, markers)
    if wheel is None:
        raise RuntimeError(f"no uv {version} wheel for {markers} at {listing_url}")
    url = urllib.parse.urljoin(listing_url, wheel["url"])
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="bulwark-uv-") as tmp:
        archive = Path(tmp) / wheel["filename"]
        with urllib.request.urlopen(url, timeout=120) as response, archive.open("wb") as out:  # noqa: S310  # nosec B310
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != wheel["hashes"]["sha256"]:
            raise RuntimeError(f"sha256 of {wheel['filename']} differs from the index's")
        with zipfile.ZipFile(archive) as zf:
            member = next((n for n in zf.namelist() if n.endswith(".data/scripts/uv")), None)
            if member is None:
                raise RuntimeError(f"{wheel['filename']} holds no uv executable")
            target = dest / "bin" / "uv"
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
            target.chmod(0o755)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        print("usage: python -m bulwark_dev.fetch_uv VERSION DEST", file=sys.stderr)
        return 2
    if os.environ.get("UV_NO_INDEX"):
        print("fetch_uv: pip is set to use no index (find-links only): pip installs uv", file=sys.stderr)
        return 2
    index = os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or "https://pypi.org/simple"
    try:
        fetch(args[0], Path(args[1]), index)
    except (OSError, RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        print(f"fetch_uv: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
