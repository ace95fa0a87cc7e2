"""Train the injection detector's linear model OFFLINE, on the tune halves only, and write injection_model.json.

Needs numpy, scipy and scikit-learn (offline only: the packaged detector reads the JSON with the standard library)
plus the data packages of bench/guardrail_eval.py. Run: `python bench/train_injection_model.py [--dry-run]`.

- Examples: every text of the "tune" half (guardrail_eval.is_held_out false) of every set; attacks are 1, benign and
  harmful-without-injection texts are 0. Held-out texts are never read here.
- Features: exactly model.model_features on the normalized (and, for long texts, sampled) text: word unigrams
  and bigrams and in-word character 3-5-grams hashed (CRC-32) into 2^18 buckets with value 1/sqrt(n), plus one
  column per rule that matched (value 1) when USE_RULE_FEATURES (off: see there).
- Model: L2 logistic regression; each set weighs in proportion to sqrt(its size), classes balanced. C is picked by
  5-fold cross-validation grouped by template/opening, maximizing TPR at <= 1% out-of-fold FPR; the probability
  threshold is the one that gives that FPR out of fold (fitted-on predictions would be over-confident).
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
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

sys.path.insert(0, str(Path(__file__).resolve().parent))

from guardrail_eval import is_held_out, load_sets

from bulwark.guardrails import injection, model, normalization, rules

BUCKETS = 1 << 18
RULE_NAMES = [name for name, _w, _p in rules._RULES]
TARGET_FPR = 0.01
# Rule hits as model inputs raised held-out TPR (96.8%) but the model then leaned on them: benign prompts that merely
# mention "system prompt", "pretend" or "developer mode" (rare in the benign sets) were flagged (hard-negative FPR
# 1.1% -> 5.0%). So the model sees text n-grams only and detect_injection takes the larger of the two scores.
USE_RULE_FEATURES = False


def featurize(texts: list[str]) -> sparse.csr_matrix:
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    rule_col = {name: BUCKETS + i for i, name in enumerate(RULE_NAMES)}
    for r, text in enumerate(texts):
        scanned = injection.scanned_text(text)
        hits = rules.rule_hits(scanned)
        tf, rf = model.model_features(normalization._basic(scanned), sorted(hits))
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dry-run", action="store_true", help="cross-validate and report, do not write the model")
    ap.add_argument("--out", default=str(model.MODEL_PATH))
    args = ap.parse_args()
    t0 = time.time()
    texts: list[str] = []
    labels: list[int] = []
    groups: list[str] = []
    weights: list[float] = []
    for s in load_sets():
        tune = [(t, g) for t, g in s.items if not is_held_out(t, g)]
        for t, g in tune:
            texts.append(t)
            labels.append(1 if s.kind == "attack" else 0)
            groups.append(" ".join(g.casefold().split()[:12]))
            weights.append(1.0 / math.sqrt(max(1, len(tune))))
        print(f"  tune {s.kind:7} {len(tune):5}  {s.name}")
    y = np.array(labels)
    sw = np.array(weights)
    for cls in (0, 1):  # balance the classes
        sw[y == cls] *= len(y) / (2.0 * sw[y == cls].sum())
    x = featurize(texts)
    print(f"{len(texts)} tune texts ({int(y.sum())} attacks), features in {time.time() - t0:.0f}s")
    best: tuple[float, float, float] | None = None
    best_c = 1.0
    folds = list(GroupKFold(n_splits=5).split(x, y, groups))
    for c in (2.0, 8.0, 32.0):
        oof = np.zeros(len(y))
        for tr, te in folds:
            clf = LogisticRegression(C=c, solver="liblinear", max_iter=2000)
            clf.fit(x[tr], y[tr], sample_weight=sw[tr])
            oof[te] = clf.predict_proba(x[te])[:, 1]
        thr, tpr, fpr = threshold_at_fpr(oof, y, TARGET_FPR)
        print(f"  C={c:5}: out-of-fold TPR {tpr:.1%} at FPR {fpr:.2%} (threshold {thr:.3f})")
        if best is None or tpr > best[1]:
            best, best_c = (thr, tpr, fpr), c
    assert best is not None
    clf = LogisticRegression(C=best_c, solver="liblinear", max_iter=2000)
    clf.fit(x, y, sample_weight=sw)
    coef = clf.coef_[0]
    text_w = coef[:BUCKETS]
    scale = float(np.abs(text_w).max()) / 127.0
    q = np.clip(np.round(text_w / scale), -127, 127).astype(np.int8)
    doc = {
        "format": "bulwark-injection-linear-v1",
        "note": "trained by bench/train_injection_model.py on the tune halves of the sets in bench/guardrail_eval.py",
        "buckets": BUCKETS,
        "char_ngrams": list(model._CHAR_NS),
        "C": best_c,
        "scale": scale,
        "bias": float(clf.intercept_[0]),
        "threshold": round(best[0], 6),
        "cv_tpr": round(best[1], 4),
        "cv_fpr": round(best[2], 4),
        "rule_weights": {
            name: round(float(w), 4) for name, w in zip(RULE_NAMES, coef[BUCKETS:], strict=True) if USE_RULE_FEATURES
        },
        "weights_b64_zlib_int8": base64.b64encode(zlib.compress(q.tobytes(), 9)).decode("ascii"),
    }
    print(f"chose C={best_c}, threshold {best[0]:.3f}; nonzero int8 weights {int((q != 0).sum())}")
    if args.dry_run:
        return
    Path(args.out).write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB) in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
