"""Train the injection detector's linear model OFFLINE, on every set of bench/guardrail_eval.py, and write
injection_model.json. Generalization is measured by leaving each source out (`guardrail_eval.py --loso`), which
retrains with this module's `fit` without that source and scores it.

Needs numpy, scipy and scikit-learn (offline only: the packaged detector reads the JSON with the standard library)
plus the data packages of bench/guardrail_eval.py. Run: `python bench/train_injection_model.py [--dry-run]`.

- Examples: every text of every trainable set (the curated hard negatives are scored only, never trained on); attacks
  are 1, benign and harmful-without-injection texts are 0.
- Features: exactly model.model_features on the normalized (and, for long texts, sampled) text: word unigrams
  and bigrams and in-word character 3-5-grams hashed (CRC-32) into 2^18 buckets with value 1/sqrt(n), plus one
  column per rule that matched (value 1) when USE_RULE_FEATURES (off: see there).
- Model: L2 logistic regression; each set weighs in proportion to sqrt(its size), classes balanced. C is picked by
  5-fold cross-validation grouped by template/opening, maximizing TPR at <= 1% out-of-fold FPR; the probability
  threshold is the one that gives that FPR out of fold (fitted-on predictions would be over-confident), and the
  stricter threshold for the model deciding alone the one that gives ALONE_FPR (0.1%).
- Shipped: text weights quantized to int8 (scale = max|w| / 127), zlib-compressed, base64 in JSON; rule weights, bias
  and threshold as floats.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guardrail_concepts
from guardrail_eval import EvalSet, load_sets

from bulwark.guardrails import injection, model, normalization, rules

BUCKETS = 1 << 18
RULE_NAMES = [name for name, _w, _p in rules._RULES]
TARGET_FPR = 0.01
# The model decides alone (no rule corroborates it) only above the probability that gives this out-of-fold FPR. The
# previous bar, a fixed 2.5x of the 1% threshold, decided no text of the leave-one-source-out evaluation.
ALONE_FPR = 0.001
C_GRID = (2.0, 8.0, 32.0)
# Rule hits as model inputs raised held-out TPR (96.8%) but the model then leaned on them: benign prompts that merely
# mention "system prompt", "pretend" or "developer mode" (rare in the benign sets) were flagged (hard-negative FPR
# 1.1% -> 5.0%). So the model sees text n-grams only and detect_injection takes the larger of the two scores.
USE_RULE_FEATURES = False


CACHE = Path(__file__).resolve().parents[1] / ".bench" / "injection-features"


def cached_features(texts: list[str], concepts: bool = False) -> sparse.csr_matrix | None:
    """The feature rows of `texts` from an earlier run, if the texts and the feature code are unchanged (.bench/ is
    ignored)."""
    path = CACHE / f"{_cache_key(texts, concepts)}.npz"
    return sparse.load_npz(path).tocsr() if path.exists() else None


def store_features(texts: list[str], x: sparse.csr_matrix, concepts: bool = False) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = CACHE.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")  # as bench_cold_start.py does: nothing here is committed
    sparse.save_npz(CACHE / f"{_cache_key(texts, concepts)}.npz", x)


def _cache_key(texts: list[str], concepts: bool) -> str:
    import hashlib

    code = Path(model.__file__).read_bytes() + Path(guardrail_concepts.__file__).read_bytes()
    h = hashlib.sha256(code + f"{len(RULE_NAMES)} {USE_RULE_FEATURES} {concepts}".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()[:24]


def featurize(
    texts: list[str], hits_out: list[dict[str, float]] | None = None, *, concepts: bool = False
) -> sparse.csr_matrix:
    """The model's feature rows (`concepts`: plus guardrail_concepts' features, for the ablation only: the packaged
    model does not use them); with `hits_out`, also every text's rule hits (all rules, no early stop)."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    rule_col = {name: BUCKETS + i for i, name in enumerate(RULE_NAMES)}
    for r, text in enumerate(texts):
        scanned = injection.scanned_text(text)
        hits = rules.rule_hits(scanned)
        if hits_out is not None:
            hits_out.append({**hits, **injection.structure_hits(scanned, hits)})
        normalized = normalization._basic(scanned)
        tf, rf = model.model_features(normalized, sorted(hits))
        if concepts:
            tf += sorted(guardrail_concepts.concept_features(model._TOKEN.findall(normalized)))
        idx = Counter(model.feature_index(f, BUCKETS) for f in tf)
        v = 1.0 / math.sqrt(max(1, len(tf)))
        for c, k in idx.items():
            rows.append(r)
            cols.append(c)
            vals.append(v * k)
        for f in rf if USE_RULE_FEATURES else ():
            rows.append(r)
            cols.append(rule_col[f[2:]])
            vals.append(1.0)
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), BUCKETS + len(RULE_NAMES)))


def threshold_at_fpr(p: np.ndarray, y: np.ndarray, fpr: float) -> tuple[float, float, float]:
    neg = np.sort(p[y == 0])[::-1]
    k = math.floor(fpr * len(neg))
    thr = float(neg[k]) + 1e-9 if k < len(neg) else 0.5
    tpr = float((p[y == 1] >= thr).mean())
    return thr, tpr, float((p[y == 0] >= thr).mean())


@dataclass
class Examples:
    texts: list[str]
    labels: np.ndarray  # 1 attack, 0 benign or harmful-without-injection
    groups: list[str]  # template/opening: cross-validation folds never split one
    sources: list[str]  # the package a text comes from (leave-one-source-out)
    set_names: list[str]
    set_sizes: list[int]
    trainable: np.ndarray  # False for sets that are only scored (the curated hard negatives)


def examples(sets: list[EvalSet]) -> Examples:
    texts: list[str] = []
    labels: list[int] = []
    groups: list[str] = []
    sources: list[str] = []
    names: list[str] = []
    sizes: list[int] = []
    trainable: list[bool] = []
    for s in sets:
        for t, g in s.items:
            texts.append(t)
            labels.append(1 if s.kind == "attack" else 0)
            groups.append(" ".join(g.casefold().split()[:12]))
            sources.append(s.name.split("/", 1)[0])
            names.append(s.name)
            sizes.append(len(s.items))
            trainable.append(s.trainable)
    return Examples(texts, np.array(labels), groups, sources, names, sizes, np.array(trainable))


def sample_weights(ex: Examples, rows: np.ndarray) -> np.ndarray:
    """Each set weighs in proportion to sqrt(its size); the two classes weigh the same."""
    sw = np.array([1.0 / math.sqrt(max(1, ex.set_sizes[i])) for i in rows])
    y = ex.labels[rows]
    for cls in (0, 1):
        if (y == cls).any():
            sw[y == cls] *= len(y) / (2.0 * sw[y == cls].sum())
    return sw


def _classifier(c: float, x: sparse.csr_matrix | np.ndarray) -> LogisticRegression:
    """liblinear's dual solver suits the 2^18 sparse n-gram columns; on dense features (bench/guardrail_transformer.py's
    sentence embeddings) it takes over a minute per fit, lbfgs under a second."""
    if isinstance(x, np.ndarray):
        return LogisticRegression(C=c, max_iter=2000)
    return LogisticRegression(C=c, solver="liblinear", dual=True, max_iter=2000)


def fit(
    x: sparse.csr_matrix | np.ndarray,
    ex: Examples,
    rows: np.ndarray,
    *,
    c_grid: tuple[float, ...] = C_GRID,
    folds: int = 5,
    verbose: bool = True,
) -> dict[str, Any]:
    """Fit on `rows` only: C and the threshold from grouped k-fold cross-validation inside them (the threshold gives
    TARGET_FPR out of fold), then one fit on all of `rows`. Returns the shipped JSON document."""
    y = ex.labels[rows]
    sw = sample_weights(ex, rows)
    xr = x[rows]
    best: tuple[float, float, float] | None = None
    best_oof = np.zeros(len(y))
    best_c = c_grid[0]
    splits = list(GroupKFold(n_splits=folds).split(xr, y, [ex.groups[i] for i in rows]))
    for c in c_grid:
        oof = np.zeros(len(y))
        for tr, te in splits:
            clf = _classifier(c, xr)
            clf.fit(xr[tr], y[tr], sample_weight=sw[tr])
            oof[te] = clf.predict_proba(xr[te])[:, 1]
        thr, tpr, fpr = threshold_at_fpr(oof, y, TARGET_FPR)
        if verbose:
            print(f"  C={c:5}: out-of-fold TPR {tpr:.1%} at FPR {fpr:.2%} (threshold {thr:.3f})")
        if best is None or tpr > best[1]:
            best, best_c, best_oof = (thr, tpr, fpr), c, oof
    assert best is not None
    alone, alone_tpr, _alone_fpr = threshold_at_fpr(best_oof, y, ALONE_FPR)
    clf = _classifier(best_c, xr)
    clf.fit(xr, y, sample_weight=sw)
    coef = clf.coef_[0]
    text_w = coef[:BUCKETS]
    scale = float(np.abs(text_w).max()) / 127.0
    q = np.clip(np.round(text_w / scale), -127, 127).astype(np.int8)
    return {
        "format": "bulwark-injection-linear-v1",
        "note": "trained by bench/train_injection_model.py on every trainable set of bench/guardrail_eval.py",
        "buckets": BUCKETS,
        "char_ngrams": list(model._CHAR_NS),
        "C": best_c,
        "scale": scale,
        "bias": float(clf.intercept_[0]),
        "threshold": round(best[0], 6),
        "threshold_alone": round(max(alone, best[0]), 6),
        "cv_tpr_alone": round(alone_tpr, 4),
        "cv_tpr": round(best[1], 4),
        "cv_fpr": round(best[2], 4),
        "rule_weights": (
            {name: round(float(w), 4) for name, w in zip(RULE_NAMES, coef[BUCKETS:], strict=True)}
            if USE_RULE_FEATURES
            else {}
        ),
        "weights_b64_zlib_int8": base64.b64encode(zlib.compress(q.tobytes(), 9)).decode("ascii"),
    }


def probabilities(doc: dict[str, Any], x: sparse.csr_matrix | np.ndarray) -> np.ndarray:
    """What model.model_probability answers for each row, from the shipped (int8) weights."""
    q = np.frombuffer(zlib.decompress(base64.b64decode(doc["weights_b64_zlib_int8"])), dtype=np.int8)
    w = np.zeros(x.shape[1])
    w[:BUCKETS] = q.astype(np.float64) * float(doc["scale"])
    z = np.clip(float(doc["bias"]) + x @ w, -50.0, 50.0)
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dry-run", action="store_true", help="cross-validate and report, do not write the model")
    ap.add_argument("--out", default=str(model.MODEL_PATH))
    args = ap.parse_args()
    t0 = time.time()
    sets = load_sets()
    ex = examples(sets)
    x = cached_features(ex.texts)
    if x is None:
        x = featurize(ex.texts)
        store_features(ex.texts, x)
    print(f"{len(ex.texts)} texts ({int(ex.labels.sum())} attacks), features in {time.time() - t0:.0f}s")
    doc = fit(x, ex, np.flatnonzero(ex.trainable))
    print(f"chose C={doc['C']}, threshold {doc['threshold']:.3f}")
    if args.dry_run:
        return
    Path(args.out).write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB) in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
