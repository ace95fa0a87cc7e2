"""The roles in template.yaml are exactly what the code needs: proven by running the code against them.

The local stack enforces each function's role on every AWS call it makes (bulwark_dev.local.aws_endpoint). Here a
stack of its own runs on a copy of template.yaml, and one scenario drives every function the way a deployment does
(the Lambda platform starting each function, a key's first use, a failed attempt, a completion with an
Idempotency-Key, the janitor's sweep). Then:

- with the template as it is, the scenario gets no AccessDenied at all: no statement is missing;
- with any one Allow statement removed (from a role, a role policy, or a key policy that names a role), the same
  scenario gets an AccessDenied for that function and one of that statement's actions: no statement is unused.

The second is decided for every statement from the authorizations the first run asked for, replayed against the
roles of the template without that statement (AwsEndpoint.refusal, the endpoint's own evaluation): a run without the
statement is the same run up to its first refusal, so it is refused exactly when one of those authorizations is. One
statement per function is also removed for real, with the stack running, and its live refusal must be one the replay
predicted: that keeps the replay honest, and proves an operator's edit of a role takes effect without a restart. The
BatchGetItem gap of issue 16 (the authorizer read a key and its failure record in one BatchGetItem that its role did
not allow) is what the first of these runs found.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from bulwark.auth.keys import new_api_key
from bulwark_dev.local.aws_endpoint import Check, Denial
from bulwark_dev.local.dynamodb_local import DynamoDBLocal
from bulwark_dev.local.iam_policy import Statement, wildcard_match
from bulwark_dev.local.iam_roles import load_roles
from bulwark_dev.local.lambda_worker import INVOKE_PREFIX
from bulwark_dev.local.stack import LocalStack
from bulwark_dev.local.template_model import parse_template_text
from tests.e2e.conftest import LineCapture
from tests.e2e.keys import create_key

ROOT = Path(__file__).resolve().parents[2]
# Statements whose calls the local stack cannot make, each with the reason. Anything not listed here must be proven.
# (The Bedrock statements exist only when BedrockModelArns / BedrockGuardrailArns are set, so not in this template.)
NOT_EXERCISED_LOCALLY: dict[str, str] = {}
# Models beside the shipped ones, so the invoker's SageMaker and upstream-secret statements are exercised too: an
# endpoint under the template's SageMakerEndpointPrefix (the local SageMaker stand-in answers with the demo model), and
# an OpenAI-compatible upstream whose API key is a secret under UpstreamSecretPrefix (from the local secrets folder).
# Both prefixes are per stack (the template's parameters, then the stack name), as the invoker's role requires.
SAGEMAKER_MODEL, KEYED_MODEL = "demo-sagemaker", "demo-keyed"
SAGEMAKER_ENDPOINT = "bulwark-bulwark-local-iam-demo"
UPSTREAM_SECRET = "bulwark/upstream/bulwark-local/iam-demo"


@dataclass
class IamStack:
    stack: LocalStack
    template: Path
    original: str

    def write(self, text: str) -> None:
        before = self.template.stat().st_mtime_ns
        self.template.write_text(text, encoding="utf-8")
        # A new modification time even within the file system's timestamp granularity: the endpoint re-reads on it.
        os.utime(self.template, ns=(before + 1_000_000, before + 1_000_000))

    def denials(self) -> list[Denial]:
        assert self.stack.aws is not None
        return self.stack.aws.journal.denials()


def _policy(state_dir: Path, demo_model_url: str | None = None) -> Path:
    from bulwark.policy import default_policy_path

    data = yaml.safe_load(default_policy_path().read_text(encoding="utf-8"))
    data.setdefault("network", {}).setdefault("failed_auth", {})["threshold"] = 100_000  # failures on purpose
    if demo_model_url:  # known once the stack runs; the functions re-read the policy file when it changes
        data["models"][SAGEMAKER_MODEL] = {"upstream": {"kind": "sagemaker", "endpoint_name": SAGEMAKER_ENDPOINT}}
        data["models"][KEYED_MODEL] = {
            "upstream": {"kind": "openai", "url": demo_model_url, "api_key_secret": UPSTREAM_SECRET},
        }
    path = state_dir / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def iam_stack(tmp_path_factory: pytest.TempPathFactory, shared_dynamodb: DynamoDBLocal) -> Iterator[IamStack]:
    work = tmp_path_factory.mktemp("iam-template")
    for name in ("functions", "layers"):  # CodeUri is relative to the template
        (work / name).symlink_to(ROOT / name)
    template = work / "template.yaml"
    shutil.copyfile(ROOT / "template.yaml", template)
    state_dir = work / "state"
    state_dir.mkdir()
    stack = LocalStack(
        project_root=work,
        template=template,
        port=0,
        state_dir=state_dir,
        policy_file=_policy(state_dir),
        progress=sys.stderr,
        log_stream=LineCapture(),
        dynamodb=shared_dynamodb,
    )
    stack.start()
    secret = state_dir / "secrets" / UPSTREAM_SECRET
    secret.parent.mkdir(parents=True)
    secret.write_text("sk-local-iam-demo\n", encoding="utf-8")
    _policy(state_dir, stack.demo_model_url)
    time.sleep(1.1)  # the functions look at the policy file's mtime at most once a second
    try:
        yield IamStack(stack, template, template.read_text(encoding="utf-8"))
    finally:
        stack.stop()


def _post(url: str, body: dict[str, Any] | None, headers: dict[str, str]) -> int:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            answer.read()
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        refused.read()
        return int(refused.code)


def _stream(url: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    """A streamed request's status; a 200 whose stream did not finish cleanly ([DONE], no error event) counts as 502,
    so a call refused after the stream began is not taken for a success."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as refused:
        refused.read()
        return int(refused.code)
    complete = text.rstrip().endswith("data: [DONE]") and '"error"' not in text and '"content"' in text
    return int(answer.status) if complete else 502


REQUEST_PATH = ("AuthorizerFunction", "ValidatorFunction", "InvokerFunction")
EVERY_FUNCTION = (*REQUEST_PATH, "JanitorFunction")


def run_scenario(iam: IamStack, functions: tuple[str, ...] = EVERY_FUNCTION) -> list[int]:
    """Everything the given functions do in AWS, once; returns the HTTP statuses (for the error message only).
    The requests reach the authorizer, validator and invoker together; the janitor runs on its own schedule."""
    stack = iam.stack
    assert stack.aws is not None and stack.fleet is not None
    for logical_id in functions:  # the platform starting each function
        stack.aws.platform_check(logical_id)
    # Cold request-path functions, as after any idle period in AWS: the authorizer and invoker read the key-hash
    # secret and the upstream API key at their first request, and all three the live policy from AppConfig (each is
    # cached per environment).
    for logical_id in set(functions) & set(REQUEST_PATH):
        stack.fleet.pools[logical_id].reap(now=time.monotonic() + 24 * 3600)
    statuses: list[int] = []
    if set(functions) & set(REQUEST_PATH):
        statuses += _requests(stack)
    if "JanitorFunction" in functions:
        janitor = stack._template().functions["JanitorFunction"].name
        schedule = json.loads((ROOT / "events" / "janitor_schedule.json").read_text())
        statuses.append(_post(f"{stack.fleet.lambda_endpoint}{INVOKE_PREFIX}{janitor}/invocations", schedule, {}))
    return statuses


def _requests(stack: LocalStack) -> list[int]:
    key, _ = create_key(stack.cli_environment(), "developer")  # a fresh key: no authorizer cache, first use
    chat = {"model": "demo-echo", "messages": [{"role": "user", "content": "hello"}]}
    auth = {"Authorization": f"Bearer {key}", "Idempotency-Key": str(uuid.uuid4())}
    statuses = [_post(f"{stack.base_url}/v1/chat/completions", chat, auth)]
    for model in (SAGEMAKER_MODEL, KEYED_MODEL):
        other = {**chat, "model": model}
        statuses.append(_post(f"{stack.base_url}/v1/chat/completions", other, {"Authorization": f"Bearer {key}"}))
    # Streamed: the validator calls the invoker with InvokeWithResponseStream and the invoker SageMaker with
    # InvokeEndpointWithResponseStream; AWS authorizes them as lambda:InvokeFunction and sagemaker:InvokeEndpoint.
    for model in ("demo-echo", SAGEMAKER_MODEL):
        streamed = {**chat, "model": model, "stream": True}
        statuses.append(_stream(f"{stack.base_url}/v1/chat/completions", streamed, {"Authorization": f"Bearer {key}"}))
    unknown, _ = new_api_key()  # well formed, never stored: a failed attempt is counted
    statuses.append(_post(f"{stack.base_url}/v1/chat/completions", chat, {"Authorization": f"Bearer {unknown}"}))
    return statuses


def _identity_allow_statements() -> list[tuple[str, Statement]]:
    """(function, statement) for every Allow of every function role, and every key-policy Allow naming a role."""
    model = load_roles(ROOT / "template.yaml")
    found = model.all_allow_statements()
    role_function = {identity.role_arn: logical_id for logical_id, identity in model.functions.items()}
    for key in model.keys.values():
        for statement in key.policy.statements:
            for principal in statement.principals:
                if statement.effect == "Allow" and principal in role_function:
                    found.append((role_function[principal], statement))
    return found


STATEMENTS = _identity_allow_statements()


def _without(text: str, statement: Statement) -> dict[str, Any]:
    """The template ``text``, parsed, with ``statement`` removed."""
    raw = parse_template_text(text)
    logical_id, _, policy_name = statement.source.partition("/")
    resource = raw["Resources"][logical_id]
    if resource["Type"] == "AWS::IAM::Role":
        documents = [p["PolicyDocument"] for p in resource["Properties"]["Policies"] if p["PolicyName"] == policy_name]
    elif resource["Type"] == "AWS::KMS::Key":
        documents = [resource["Properties"]["KeyPolicy"]]
    else:
        documents = [resource["Properties"]["PolicyDocument"]]
    removed = 0
    for document in documents:
        kept = [s for s in document["Statement"] if not (isinstance(s, dict) and s.get("Sid") == statement.sid)]
        removed += len(document["Statement"]) - len(kept)
        document["Statement"] = kept
    assert removed == 1, f"{statement.name} not found exactly once"
    return raw


def test_every_statement_is_listed_or_exercised() -> None:
    names = {statement.name for _, statement in STATEMENTS}
    assert set(NOT_EXERCISED_LOCALLY) <= names, "a statement listed as not exercised is gone: drop it from the list"


@dataclass
class Run:
    statuses: list[int]
    denials: list[Denial]
    checks: list[tuple[str, Check]]  # every authorization asked for, in order


@pytest.fixture(scope="module")
def as_is(iam_stack: IamStack) -> Run:
    """The whole scenario once, on the template as it is, with every authorization it asked for kept."""
    journal = iam_stack.stack.aws.journal  # type: ignore[union-attr]
    iam_stack.write(iam_stack.original)
    journal.clear()
    journal.keep_checks = True
    try:
        statuses = run_scenario(iam_stack)
        return Run(statuses, iam_stack.denials(), journal.checks())
    finally:
        journal.keep_checks = False
        journal.clear()


def _predicted(iam_stack: IamStack, run: Run, function: str, statement: Statement) -> list[tuple[str, str, str]]:
    """(function, action, resource) of each authorization of ``run`` that the template without ``statement`` refuses
    to ``function`` for one of the statement's actions."""
    endpoint = iam_stack.stack.aws
    assert endpoint is not None
    without = endpoint.roles.variant(_without(iam_stack.original, statement))
    return [
        (logical_id, check.action, check.resource)
        for logical_id, check in run.checks
        if logical_id == function
        and any(wildcard_match(a, check.action, ignore_case=True) for a in statement.actions)
        and endpoint.refusal(without, logical_id, check) is not None
    ]


def test_the_template_as_it_is_allows_everything_the_code_does(as_is: Run) -> None:
    assert as_is.denials == [], "a statement is missing"
    assert as_is.statuses == [200, 200, 200, 200, 200, 401, 200], as_is.statuses
    asked = {logical_id for logical_id, _ in as_is.checks}
    assert asked == set(EVERY_FUNCTION), f"the scenario must reach every function's AWS calls: {asked}"


@pytest.mark.parametrize(
    ("function", "statement"),
    [pytest.param(f, s, id=s.name) for f, s in STATEMENTS if s.name not in NOT_EXERCISED_LOCALLY],
)
def test_without_the_statement_the_code_gets_access_denied(
    iam_stack: IamStack, as_is: Run, function: str, statement: Statement
) -> None:
    predicted = _predicted(iam_stack, as_is, function, statement)
    assert predicted, f"{statement.name} is unused: the scenario needs none of its actions from it"


def _one_per_function() -> list[tuple[str, Statement]]:
    seen: dict[str, Statement] = {}
    for function, statement in STATEMENTS:
        if statement.name not in NOT_EXERCISED_LOCALLY:
            seen.setdefault(function, statement)
    return list(seen.items())


@pytest.mark.parametrize(("function", "statement"), [pytest.param(f, s, id=s.name) for f, s in _one_per_function()])
def test_a_statement_removed_while_the_stack_runs_is_refused_as_predicted(
    iam_stack: IamStack, as_is: Run, function: str, statement: Statement
) -> None:
    predicted = _predicted(iam_stack, as_is, function, statement)
    iam_stack.write(yaml.safe_dump(_without(iam_stack.original, statement), sort_keys=False))
    try:
        iam_stack.stack.aws.journal.clear()  # type: ignore[union-attr]
        statuses = run_scenario(iam_stack, (function,))
        denied = [
            (d.function, d.action, d.resource)
            for d in iam_stack.denials()
            if d.function == function and any(wildcard_match(a, d.action, ignore_case=True) for a in statement.actions)
        ]
        assert denied, f"{statement.name} is unused: the scenario ran without it ({statuses})"
        assert denied[0] in predicted, f"refused {denied[0]}, but the replay predicted {predicted}"
    finally:
        iam_stack.write(iam_stack.original)
