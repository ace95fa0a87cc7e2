"""`bulwark policy push --stack NAME FILE`: a policy change without a redeploy.

1. The file is validated exactly as `bulwark policy check` does (same messages, same exit status): a bad policy never
   leaves this machine.
2. The stack's AppConfig application, environment, configuration profile and deployment strategy are found by the
   names template.yaml gives them (``<stack>-policy``, ``live``, ``policy``, ``<stack>-policy-all-at-once``).
3. The policy, as JSON, becomes a new hosted configuration version; a deployment of it starts with the stack's
   strategy. AppConfig runs the profile's JSON Schema validator before it deploys anything.

The functions take the new version within their cache period (BULWARK_POLICY_TTL_SECONDS, 45 s as deployed) and keep
the last good policy if one ever fails to load (bulwark.policy_source).

The running `bulwark local` is a stack too (named bulwark-local): its AppConfig stand-in and operator credentials are
found in .bulwark/local.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bulwark.settings import POLICY_TTL_SECONDS
from bulwark_dev.cli import EXIT_ERROR, EXIT_OK, CliError, _alive, _find_state_dir, checked_policy

_FAILED_STATES = ("ROLLED_BACK", "REVERTED")
_WAIT_SECONDS = 900.0


@dataclass(frozen=True, slots=True)
class PolicyNames:
    """What template.yaml names the live policy's AppConfig resources (tests/unit/test_template_policy.py)."""

    application: str
    environment: str
    profile: str
    strategy: str


def policy_names(stack: str) -> PolicyNames:
    return PolicyNames(f"{stack}-policy", "live", "policy", f"{stack}-policy-all-at-once")


@dataclass(frozen=True, slots=True)
class Target:
    stack: str
    region: str | None
    endpoint_url: str | None
    credentials: dict[str, str]  # explicit keys (the local operator); empty: the caller's own AWS credentials
    local: bool  # validate as `bulwark local` runs it (plain http to loopback allowed)


def _target(args: argparse.Namespace) -> Target:
    endpoint = args.endpoint_url or None
    if endpoint is None:
        state = _find_state_dir(Path.cwd())
        data = json.loads((state / "local.json").read_text(encoding="utf-8")) if state is not None else {}
        env = data.get("environment") or {}
        if env.get("BULWARK_LOCAL_STACK_NAME") == args.stack:
            pid = data.get("pid")
            if isinstance(pid, int) and not _alive(pid):
                raise CliError(f"The local stack '{args.stack}' is not running. Start it with `bulwark local`.")
            credentials = {
                "aws_access_key_id": env["BULWARK_OPERATOR_ACCESS_KEY_ID"],
                "aws_secret_access_key": env["BULWARK_OPERATOR_SECRET_ACCESS_KEY"],
            }
            region = env.get("AWS_REGION")
            return Target(args.stack, region, env["AWS_ENDPOINT_URL_APPCONFIG"], credentials, local=True)
    loopback = endpoint is not None and urllib.parse.urlsplit(endpoint).hostname in ("127.0.0.1", "localhost")
    return Target(args.stack, args.region, endpoint, {}, local=loopback)


def _document(path: Path) -> bytes:
    """The policy file as AppConfig holds it: JSON (a YAML file converted; a JSON file is YAML too)."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return json.dumps(raw, separators=(",", ":"), sort_keys=True).encode("utf-8")
    except (TypeError, ValueError) as exc:  # a YAML date or another value JSON cannot hold
        raise CliError(f"{path}: cannot be written as JSON ({exc}); quote the value") from None


def _client(target: Target) -> Any:
    import boto3

    return boto3.session.Session().client(  # its own session: credentials resolved now, not cached process-wide
        "appconfig",
        region_name=target.region,
        endpoint_url=target.endpoint_url,
        aws_access_key_id=target.credentials.get("aws_access_key_id"),
        aws_secret_access_key=target.credentials.get("aws_secret_access_key"),
    )


def _find(items: list[dict[str, Any]], name: str, what: str, target: Target) -> str:
    for item in items:
        if item.get("Name") == name:
            return str(item["Id"])
    raise CliError(
        f"Stack '{target.stack}' has no AppConfig {what} named '{name}'"
        f"{f' in {target.region}' if target.region else ''}. Deploy the current template (sam deploy) once, "
        "or check --stack and --region."
    )


def _every(call: Any, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = call(**params)
        items += page.get("Items", [])
        if not page.get("NextToken"):
            return items
        params["NextToken"] = page["NextToken"]


def _say(args: argparse.Namespace, out: TextIO, line: str) -> None:
    if not args.json:
        out.write(line + "\n")
        out.flush()


def _refusal(exc: Any) -> str:
    """AppConfig's answer to a refused deployment, with the validator's findings."""
    error = exc.response.get("Error", {})
    details = (exc.response.get("Details") or {}).get("InvalidConfiguration") or []
    found = "; ".join(f"{d.get('Location') or '(top level)'}: {d.get('Reason')}" for d in details[:10])
    return f"{error.get('Code')}: {error.get('Message')}" + (f" ({found})" if found else "")


def _deploy(args: argparse.Namespace, target: Target, document: bytes, out: TextIO) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    names = policy_names(target.stack)
    try:
        appconfig = _client(target)
        app = _find(_every(appconfig.list_applications), names.application, "application", target)
        env = _find(_every(appconfig.list_environments, ApplicationId=app), names.environment, "environment", target)
        profiles = _every(appconfig.list_configuration_profiles, ApplicationId=app)
        profile = _find(profiles, names.profile, "configuration profile", target)
        strategy = _find(_every(appconfig.list_deployment_strategies), names.strategy, "deployment strategy", target)
        _say(args, out, f"Stack {target.stack}: application {app}, environment {env}, profile {profile}")
        version = appconfig.create_hosted_configuration_version(
            ApplicationId=app,
            ConfigurationProfileId=profile,
            Content=document,
            ContentType="application/json",
            Description=f"bulwark policy push {Path(args.file).name}"[:1024],
        )["VersionNumber"]
        _say(args, out, f"Uploaded the policy as hosted configuration version {version}")
        deployment = appconfig.start_deployment(
            ApplicationId=app,
            EnvironmentId=env,
            DeploymentStrategyId=strategy,
            ConfigurationProfileId=profile,
            ConfigurationVersion=str(version),
            Description=f"bulwark policy push {Path(args.file).name}"[:1024],
        )
    except NoCredentialsError:
        raise CliError("No AWS credentials found. Set AWS_PROFILE (or run `aws sso login`) and try again.") from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
            raise CliError(f"AWS refused the push ({_refusal(exc)}). Use credentials allowed to deploy.") from None
        if code == "ConflictException":
            raise CliError("Another policy deployment is in progress on this stack; retry when it completes.") from None
        raise CliError(f"AppConfig refused the policy: {_refusal(exc)}. Nothing was deployed.") from None
    except BotoCoreError as exc:
        raise CliError(f"Cannot reach AppConfig: {exc}. Check --region and the network.") from None
    number = deployment["DeploymentNumber"]
    _say(args, out, f"Deployment {number} started ({deployment.get('State', '')}) with strategy {names.strategy}")
    state = str(deployment.get("State", ""))
    if args.wait:
        state = _wait(args, appconfig, app, env, number, out)
    return {
        "ok": True,
        "stack": target.stack,
        "application_id": app,
        "environment_id": env,
        "profile_id": profile,
        "version": version,
        "deployment": number,
        "state": state,
    }


def _wait(args: argparse.Namespace, appconfig: Any, app: str, env: str, number: int, out: TextIO) -> str:
    deadline = time.monotonic() + _WAIT_SECONDS
    last = ""
    while True:
        state = str(appconfig.get_deployment(ApplicationId=app, EnvironmentId=env, DeploymentNumber=number)["State"])
        if state != last:
            _say(args, out, f"Deployment {number}: {state}")
            last = state
        if state == "COMPLETE":
            return state
        if state in _FAILED_STATES:
            raise CliError(
                f"Deployment {number} was {state.lower().replace('_', ' ')} (an alarm or a person stopped it); "
                "the previous policy stays in force. See the AppConfig console's deployment events."
            )
        if time.monotonic() > deadline:
            raise CliError(f"Deployment {number} is still {state} after {_WAIT_SECONDS:.0f} s; check it in AppConfig.")
        time.sleep(2.0)


def cmd_policy_push(args: argparse.Namespace, out: TextIO) -> int:
    target = _target(args)
    path = Path(args.file)
    policy = checked_policy(path, local=target.local, as_json=args.json, out=out)
    if policy is None:
        return EXIT_ERROR
    document = _document(path)
    digest = hashlib.sha256(document).hexdigest()[:12]
    _say(args, out, f"{path}: valid ({len(policy.models)} models, {len(policy.roles)} roles), document {digest}")
    result = {**_deploy(args, target, document, out), "document": digest}
    if args.json:
        out.write(json.dumps({"file": str(path), **result}, indent=2, sort_keys=True) + "\n")
    else:
        out.write(
            f"Pushed. The functions take the new policy within their cache period ({POLICY_TTL_SECONDS} s as "
            "deployed) and log "
            f"'new policy in force' with policy_version {digest}.\n"
        )
    return EXIT_OK


def register(pol: Any, common: argparse.ArgumentParser) -> None:
    push = pol.add_parser(
        "push",
        parents=[common],
        help="validate a policy file, then deploy it to a stack's AppConfig (no sam deploy)",
        description="Validates FILE as `bulwark policy check` does, then deploys it with the stack's AppConfig "
        "deployment strategy. The functions take it within their cache period (45 s as deployed).",
    )
    push.add_argument("file")
    push.add_argument("--stack", required=True, help="the stack's name (bulwark-local: the running `bulwark local`)")
    push.add_argument("--region", help="AWS region of the stack")
    push.add_argument("--wait", action="store_true", help="wait until the deployment completes")
    push.add_argument("--endpoint-url", help=argparse.SUPPRESS)
    push.set_defaults(func=cmd_policy_push)
