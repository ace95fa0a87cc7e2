"""The shipped policy's JSON twin, written at build time so a cold start need not import a YAML parser (~20 ms).

`sam build` (layers/bulwark/Makefile) calls `write_twin` on the layer's copy of the policy, which writes
``policy.yaml.json``: the parsed document plus the SHA-256 of the YAML it came from. At load, bulwark.policy uses the
twin only if that hash matches the YAML file beside it, so an edited policy is never shadowed by a stale twin. This
module needs nothing but the standard library and PyYAML (it runs on the build machine, which cannot load the layer's
arm64 pydantic).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SUFFIX = ".json"


def twin_path(policy: Path) -> Path:
    return policy.with_name(policy.name + SUFFIX)


def write_twin(policy: Path) -> bool:
    """Write the twin; False (and no twin) when the document is not plain JSON data (e.g. a YAML date)."""
    import yaml

    source = policy.read_bytes()
    document = yaml.safe_load(source)
    twin = twin_path(policy)
    try:
        text = json.dumps({"source_sha256": hashlib.sha256(source).hexdigest(), "policy": document}, allow_nan=False)
    except (TypeError, ValueError):
        twin.unlink(missing_ok=True)
        return False
    twin.write_text(text, encoding="utf-8")
    return True


def read_twin(policy: Path, source: bytes) -> Any | None:
    """The parsed policy from the twin if it was made from exactly `source`, else None."""
    try:
        data = json.loads(twin_path(policy).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("source_sha256") != hashlib.sha256(source).hexdigest():
        return None
    return data.get("policy")
