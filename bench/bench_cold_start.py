"""Cold start: each function's import + initialisation time in a fresh process, next to a boto3-only baseline.

Each sample is a new interpreter that imports the function's `app.py` the way the Lambda runtime does (task root first
on sys.path, the layer on PYTHONPATH as /opt/python would be) with the function's environment from template.yaml plus
what the Lambda runtime sets (AWS_LAMBDA_FUNCTION_NAME, LAMBDA_TASK_ROOT, AWS_REGION, credentials, ...). The clock
starts after interpreter start-up, when the runtime would begin the import, and stops when the module-level code
(clients, policy, service) is done. Median of --runs samples.

The interpreter is, by default, a clean Lambda-like environment built once under `.bench/venv`: Python 3.13 (the
Lambda runtime) with only boto3 and the layers' requirements*.txt (the project .venv holds aws-sam-cli's awscrt,
which makes `import boto3` slower and would flatter the ratio). If that cannot be built, the project interpreter is
used and the table says so.

Also reported: the modules each function imports that it should not (the authorizer must not import validation,
guardrails, upstreams or the JWT crypto stack when no issuer is configured) and the slowest imports (-X importtime).

Run: `python bench/bench_cold_start.py [--runs 7]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import ROOT, median, say, table, verdict

BENCH_DIR = ROOT / ".bench"
VENV = BENCH_DIR / "venv"
LAYER = BENCH_DIR / "layer"
FUNCTIONS = ("AuthorizerFunction", "ValidatorFunction", "InvokerFunction")
# What each function must not import at cold start (prefixes of module names). No function needs boto3, botocore or
# the X-Ray SDK before its first request: the hot path uses bulwark.aws.wire and bulwark.aws.xray.
# (Powertools imports the bare `botocore` package, 0.5 ms, to extend its user agent; the SDK's clients and sessions
# are what cost.)
_SDKS = ("boto3", "botocore.session", "botocore.client", "aws_xray_sdk")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "AuthorizerFunction": (
        "bulwark.validation",
        "bulwark.guardrails",
        "bulwark.upstreams",
        "bulwark.services.validator_service",
        "bulwark.services.invoker_service",
        "bulwark.auth.jwt_verify",
        "jwt",
        "cryptography",
        "fastjsonschema",
        *_SDKS,
    ),
    "ValidatorFunction": (
        "bulwark.upstreams",
        "bulwark.services.invoker_service",
        "bulwark.auth.decision",
        "bulwark.auth.pepper",
        "bulwark.store.keys_table",
        "bulwark.auth.jwt_verify",
        "bulwark.auth.jwks",
        "jwt",
        *_SDKS,
    ),
    "InvokerFunction": (
        "bulwark.validation",
        "bulwark.services.validator_service",
        "bulwark.auth.decision",
        "bulwark.auth",
        "jwt",
        *_SDKS,
    ),
}
# Exact module names a function needs although a FORBIDDEN prefix covers them. The invoker builds its MacVerifier at
# init (services.invoker_service.build): bulwark.auth.invoker_trust checks the validator's KMS MAC on every request, so
# it and its (import-light) package are what the invoker needs of bulwark.auth; any other bulwark.auth module is not.
ALLOWED: dict[str, tuple[str, ...]] = {
    "InvokerFunction": ("bulwark.auth", "bulwark.auth.invoker_trust"),
}

PROBE = r"""
import importlib.util, json, os, sys, time
t0 = time.perf_counter()
mode = sys.argv[1]
before = set(sys.modules)
if mode == "baseline":
    import boto3  # noqa: F401
elif mode == "baseline+client":
    import boto3
    boto3.client("dynamodb")
else:
    code_dir = os.environ["LAMBDA_TASK_ROOT"]
    sys.path.insert(0, code_dir)
    spec = importlib.util.spec_from_file_location("app", os.path.join(code_dir, "app.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
elapsed = (time.perf_counter() - t0) * 1000
print(json.dumps({"ms": elapsed, "modules": sorted(set(sys.modules) - before)}))
"""


def _python_version(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def lambda_like_python() -> tuple[str, str]:
    """(interpreter, description): the clean .bench/venv (built on first use) or the current interpreter."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".bulwark-bench"
    # Both layers' requirements: the authorizer runs with BulwarkLayer and JwtLayer (no other function imports it).
    requirements = [ROOT / "layers/bulwark/requirements.txt", ROOT / "layers/bulwark/requirements-jwt.txt"]
    want = "".join(path.read_text() for path in requirements)
    if python.exists() and stamp.exists() and stamp.read_text() == want:
        return str(python), _clean_description(str(python))
    base = _find_313()
    if base is None:
        return sys.executable, f"project interpreter (Python {_python_version(sys.executable)}; no python3.13 found)"
    say(f"cold start: building the Lambda-like venv under .bench/venv with {base} (first run only, ~1 min)")
    try:
        BENCH_DIR.mkdir(exist_ok=True)
        (BENCH_DIR / ".gitignore").write_text("*\n")
        if VENV.exists():
            shutil.rmtree(VENV)
        subprocess.run([base, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "boto3",
                *(arg for path in requirements for arg in ("-r", str(path))),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        stamp.write_text(want)
    except (subprocess.CalledProcessError, OSError) as exc:
        say(f"cold start: could not build the venv ({exc}); using the project interpreter")
        return sys.executable, f"project interpreter (Python {_python_version(sys.executable)}; venv build failed)"
    return str(python), _clean_description(str(python))


def _clean_description(python: str) -> str:
    return f"clean venv .bench/venv (Python {_python_version(python)}, boto3 + layer requirements only)"


def _find_313() -> str | None:
    candidates: list[str | None] = []
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
        candidates += sorted(str(p) for p in Path(root, "versions").glob("3.13*/bin/python3.13"))
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates.append(shutil.which("python3.13"))
    for candidate in candidates:
        if not candidate:
            continue
        if subprocess.run([candidate, "-c", "import venv"], capture_output=True, check=False).returncode == 0:
            return candidate
    return None


def compiled_layer(python: str) -> None:
    """The bulwark package as `sam build` ships it (layers/bulwark/Makefile): the policy's JSON twin, and python3.13
    bytecode, because Lambda's read-only file system means a module without it is recompiled on every cold start."""
    target = LAYER / "bulwark"
    if LAYER.exists():
        shutil.rmtree(LAYER)
    shutil.copytree(ROOT / "layers/bulwark/bulwark", target, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(  # the policy's JSON twin, as the Makefile writes it
        [
            python,
            "-c",
            "import sys, pathlib, bulwark.policy_twin as t; t.write_twin(pathlib.Path(sys.argv[1]))",
            str(target / "policy.yaml"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(LAYER)},
    )
    subprocess.run(
        [python, "-m", "compileall", "-q", "--invalidation-mode", "checked-hash", str(LAYER)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def function_env(logical_id: str) -> dict[str, str]:
    """The function's environment as Lambda would give it (template variables + runtime variables)."""
    from bulwark_dev.local.template_model import load_template

    template = load_template(ROOT / "template.yaml")
    fn = template.functions[logical_id]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        **fn.environment,
        "AWS_LAMBDA_FUNCTION_NAME": fn.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2025/01/01/[$LATEST]bench",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "LAMBDA_TASK_ROOT": str(fn.code_dir),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": fn.handler,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIDLOCALBENCH",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_SESSION_TOKEN": "local",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
        "PYTHONPATH": str(LAYER),  # the layer as built (see compiled_layer), as /opt/python is on Lambda
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return env


def _sample(python: str, mode: str, env: dict[str, str], *, importtime: bool = False) -> dict[str, Any]:
    argv = [python, "-X", "importtime", "-c", PROBE, mode] if importtime else [python, "-c", PROBE, mode]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode}: {proc.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if importtime:
        result["importtime"] = _slowest(proc.stderr)
    return result


def _slowest(stderr: str, top: int = 4) -> list[tuple[str, float]]:
    """Top-level packages by cumulative import time (ms), from -X importtime output."""
    best: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p.strip() for p in line[len("import time:") :].split("|")]
        try:
            cumulative = int(parts[1]) / 1000
        except ValueError:
            continue
        name = parts[2].strip()
        root = name.split(".")[0]
        if root in ("app",) or name != name.lstrip():
            continue
        best[root] = max(best.get(root, 0.0), cumulative)
    return sorted(best.items(), key=lambda kv: -kv[1])[:top]


CA_PROBE = (
    "import ssl, time; t = time.perf_counter(); ssl.create_default_context(); print((time.perf_counter() - t) * 1000)"
)


def ca_store_ms(python: str, runs: int) -> float:
    """What the first TLS connection of a process adds: loading the CA store into a context (median of `runs`)."""
    samples = []
    for _ in range(runs):
        proc = subprocess.run([python, "-c", CA_PROBE], capture_output=True, text=True, timeout=60, check=True)
        samples.append(float(proc.stdout.strip()))
    return median(samples)


def run(runs: int) -> str:
    python, where = lambda_like_python()
    compiled_layer(python)
    rows: list[tuple[str, str, str, int | str, int | str]] = []
    base_env = function_env("AuthorizerFunction")
    envs = {logical: function_env(logical) for logical in FUNCTIONS}
    # Interleaved (one sample of every variant per round) so background load on the machine hits all alike.
    samples: dict[str, list[dict[str, Any]]] = {"baseline": [], "baseline+client": [], **{f: [] for f in FUNCTIONS}}
    for i in range(runs):
        say(f"cold start: round {i + 1}/{runs} (baseline, baseline + client, {', '.join(FUNCTIONS)})")
        samples["baseline"].append(_sample(python, "baseline", base_env))
        samples["baseline+client"].append(_sample(python, "baseline+client", base_env))
        for logical in FUNCTIONS:
            samples[logical].append(_sample(python, "handler", envs[logical]))
    baseline = median(s["ms"] for s in samples["baseline"])
    with_client = median(s["ms"] for s in samples["baseline+client"])
    rows.append(("baseline: bare handler, `import boto3`", f"{baseline:.0f}", "1.00", "", ""))
    ratio_client = f"{with_client / baseline:.2f}"
    rows.append(
        (
            "baseline + one boto3 client (what a function using the SDK builds)",
            f"{with_client:.0f}",
            ratio_client,
            "",
            "",
        )
    )
    imports_rows = []
    ratios: dict[str, float] = {}
    for logical in FUNCTIONS:
        ms = median(s["ms"] for s in samples[logical])
        ratios[logical] = ms / baseline
        modules: list[str] = samples[logical][0]["modules"]
        allowed = ALLOWED.get(logical, ())
        bad_modules = [
            m for m in modules if m not in allowed and any(m == p or m.startswith(p + ".") for p in FORBIDDEN[logical])
        ]
        groups: dict[str, int] = {}
        for m in bad_modules:
            prefix = next(p for p in FORBIDDEN[logical] if m == p or m.startswith(p + "."))
            groups[prefix] = groups.get(prefix, 0) + 1
        bad = [f"{p} ({n} modules)" if n > 1 else p for p, n in sorted(groups.items())]
        slow = _sample(python, "handler", envs[logical], importtime=True)["importtime"]
        rows.append(
            (
                logical,
                f"{ms:.0f}",
                f"**{ms / baseline:.2f}**",
                len(modules),
                len([m for m in modules if m.startswith("bulwark")]),
            )
        )
        imports_rows.append(
            (
                logical,
                ", ".join(bad) if bad else "none",
                ", ".join(f"{name} {t:.0f}" for name, t in slow),
            )
        )
    targets = [
        (f"{logical}: init <= 1.3x the boto3-only baseline", f"{ratios[logical]:.2f}x", verdict(ratios[logical] <= 1.3))
        for logical in FUNCTIONS
    ]
    auth_bad = imports_rows[0][1]
    auth_target = "authorizer imports nothing only the validator or invoker needs"
    targets.append((auth_target, auth_bad, verdict(auth_bad == "none")))
    ca_ms = ca_store_ms(python, runs)
    return "\n".join(
        [
            f"### Cold start: import + init in a fresh process (median of {runs}; {where})",
            "",
            table(["function", "init ms", "ratio to baseline", "modules imported", "bulwark modules"], rows),
            "",
            table(
                ["function", "imports it should not", "slowest top-level imports (cumulative ms, -X importtime)"],
                imports_rows,
                "lll",
            ),
            "",
            table(["target", "measured", ""], targets),
            "",
            f"Not in these figures: the first TLS connection of a process loads the CA store, {ca_ms:.0f} ms here, "
            "once per container (bulwark.aws.wire.tls_context; boto3 too loads it at its first connection, not when "
            "a client is made). The local stack and this benchmark speak plain HTTP to DynamoDB Local.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(run(args.runs))


if __name__ == "__main__":
    main()
