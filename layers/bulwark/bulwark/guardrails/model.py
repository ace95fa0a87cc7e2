"""The injection detector's linear model: hashed word and character n-gram features, int8 weights in a JSON file.

Trained offline by bench/train_injection_model.py on exactly the features model_features computes here.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import json
import math
import re
import zlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MODEL_PATH = Path(__file__).with_name("injection_model.json")
_TOKEN = re.compile(r"\w+")
_CHAR_NS = (3, 4, 5)
_MAX_TOKEN_CHARS = 24  # longer tokens (CJK runs, hashes, base64) contribute char n-grams of their first 24 chars only
_MODEL_MAX_TOKENS = 4096  # tokens fed to the model: the first 2048 and the last 2048
_TOKEN_CACHE_MAX = 50_000
_token_cache: dict[str, tuple[str, ...]] = {}


def _token_grams(tok: str) -> tuple[str, ...]:
    grams = _token_cache.get(tok)
    if grams is None:
        padded = f"<{tok[:_MAX_TOKEN_CHARS]}>"
        found = {"w:" + tok}
        for n in _CHAR_NS:
            found.update("c:" + padded[i : i + n] for i in range(len(padded) - n + 1))
        grams = tuple(found)
        if len(_token_cache) >= _TOKEN_CACHE_MAX:
            _token_cache.clear()
        _token_cache[tok] = grams
    return grams


def model_features(normalized: str, rules: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """Feature strings of a normalized text: (text features, rule features).

    Text features are word unigrams and bigrams and character 3-5-grams inside each word (padded with < and >),
    each counted once; rule features are "r:" plus the name of each rule that matched. Used by the offline trainer
    (bench/train_injection_model.py) and at inference, so both see exactly the same features.
    """
    toks = _TOKEN.findall(normalized)
    if len(toks) > _MODEL_MAX_TOKENS:
        half = _MODEL_MAX_TOKENS // 2
        toks = toks[:half] + toks[-half:]
    feats: set[str] = set()
    for tok in set(toks):
        feats.update(_token_grams(tok))
    feats.update({f"b:{a} {b}" for a, b in itertools.pairwise(toks)})  # a set comprehension: faster than a genexpr
    return list(feats), ["r:" + r for r in rules]


def feature_index(feature: str, buckets: int) -> int:
    """Stable bucket of a feature string (CRC-32: the same in every process, unlike hash())."""
    return zlib.crc32(feature.encode("utf-8", "surrogatepass")) & (buckets - 1)


@dataclass(frozen=True)
class _Model:
    buckets: int
    scale: float
    bias: float
    threshold: float
    threshold_alone: float  # the bar when no rule corroborates the model (a lower out-of-fold FPR)
    weights: array[int]
    rule_weights: dict[str, float]


@functools.cache
def load_model() -> _Model | None:
    """Load the packaged weights once per process (lazily: the first detect_injection call pays a few ms)."""
    try:
        doc = json.loads(MODEL_PATH.read_text(encoding="utf-8"))
        weights = array("b", zlib.decompress(base64.b64decode(doc["weights_b64_zlib_int8"])))
        if len(weights) != int(doc["buckets"]):
            raise ValueError("weight count does not match buckets")
        return _Model(
            buckets=int(doc["buckets"]),
            scale=float(doc["scale"]),
            bias=float(doc["bias"]),
            threshold=float(doc["threshold"]),
            threshold_alone=float(doc.get("threshold_alone", 1.0)),
            weights=weights,
            rule_weights={str(k): float(v) for k, v in doc["rule_weights"].items()},
        )
    except (OSError, ValueError, KeyError, zlib.error, binascii.Error):
        return None  # rules alone still run; model_loaded() tells the eval and the tests


def model_loaded() -> bool:
    return load_model() is not None


_BUCKET_CACHE_MAX = 100_000  # ~10 MB at most; cleared when full, like the token cache
_bucket_cache: dict[str, int] = {}  # for the one model a process loads (load_model is cached)


def _buckets(features: list[str], buckets: int) -> list[int]:
    """feature_index of each feature, remembered: a conversation's words recur, and CRC-32 per feature was half the
    model's cost."""
    cache = _bucket_cache
    try:
        return list(map(cache.__getitem__, features))
    except KeyError:
        if len(cache) >= _BUCKET_CACHE_MAX:
            cache.clear()
        for f in features:
            if f not in cache:
                cache[f] = feature_index(f, buckets)
        return list(map(cache.__getitem__, features))


def model_probability(normalized: str, rules: Iterable[str] = ()) -> float | None:
    """P(injection) from the linear model for an already-normalized text, or None when no model is packaged."""
    m = load_model()
    if m is None:
        return None
    text_feats, rule_feats = model_features(normalized, rules)
    if not text_feats and not rule_feats:
        return 0.0
    total = sum(map(m.weights.__getitem__, _buckets(text_feats, m.buckets)))
    z = m.bias + total * m.scale / math.sqrt(max(1, len(text_feats)))
    z += sum(m.rule_weights.get(r[2:], 0.0) for r in rule_feats)
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))
