"""`bulwark`: the command line for people (and, with --json, for scripts).

The same commands manage a local stack (found through .bulwark/local.json, written by `bulwark local`) or a deployed
one (`--stack NAME`, read from CloudFormation outputs with the caller's own AWS credentials). There is no admin HTTP
surface to attack.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from bulwark.errors import BulwarkError, StoreUnavailable
from bulwark.policy import Policy, PolicyError

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """An error for a person: what went wrong and what to do next."""


# ---------------------------------------------------------------------------------------------------------- targets
def _find_state_dir(start: Path) -> Path | None:
    for d in (start, *start.parents):
        if (d / ".bulwark" / "local.json").exists():
            return d / ".bulwark"
    return None


def _target_env(args: argparse.Namespace) -> dict[str, str]:
    """Where the keys live: --stack (deployed), else BULWARK_* variables, else a running `bulwark local`."""
    if getattr(args, "stack", None):
        return _stack_env(args.stack, getattr(args, "region", None))
    if os.environ.get("BULWARK_KEYS_TABLE"):
        return dict(os.environ)
    state = _find_state_dir(Path.cwd())
    if state is not None:
        data = json.loads((state / "local.json").read_text(encoding="utf-8"))
        env = data.get("environment") or data.get("env") or {}
        if not env.get("BULWARK_KEYS_TABLE"):
            raise CliError("The local stack state in .bulwark/local.json is incomplete. Restart `bulwark local`.")
        pid = data.get("pid")
        if isinstance(pid, int) and not _alive(pid):
            raise CliError(
                "The local stack recorded in .bulwark/local.json is not running. Start it with `bulwark local`."
            )
        return {**os.environ, **{k: str(v) for k, v in env.items()}}
    raise CliError("No stack to talk to. Start one with `bulwark local`, or pass --stack NAME for a deployed stack.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stack_env(stack: str, region: str | None) -> dict[str, str]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        cfn = boto3.client("cloudformation", region_name=region)
        outputs = cfn.describe_stacks(StackName=stack)["Stacks"][0].get("Outputs", [])
    except (BotoCoreError, ClientError) as exc:
        raise CliError(
            f"Cannot read stack '{stack}': {exc}. Check the name, region and your AWS credentials."
        ) from None
    values = {o["OutputKey"]: o["OutputValue"] for o in outputs}
    try:
        return {
            **os.environ,
            "BULWARK_KEYS_TABLE": values["KeysTableName"],
            "BULWARK_COUNTERS_TABLE": values["CountersTableName"],
            "BULWARK_HMAC_SECRET_ID": values["KeyHashSecretArn"],
            "BULWARK_USAGE_PLAN_ID": values.get("UsagePlanId", ""),
            "AWS_REGION": region or cfn.meta.region_name,
        }
    except KeyError as exc:
        raise CliError(f"Stack '{stack}' has no output {exc}; is it a Bulwark stack?") from None


def _admin(args: argparse.Namespace) -> Any:
    from bulwark.auth.key_admin import KeyAdmin
    from bulwark.auth.pepper import Pepper
    from bulwark.settings import Settings
    from bulwark.store.counters_table import CountersTable
    from bulwark.store.keys_table import KeysTable

    env = _target_env(args)
    cfg = Settings.from_env(env)
    import boto3

    session = boto3.session.Session(region_name=cfg.region)
    endpoint = env.get("AWS_ENDPOINT_URL_DYNAMODB")
    local = bool(endpoint and env.get("AWS_ACCESS_KEY_ID"))
    ddb = session.client(
        "dynamodb",
        endpoint_url=endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"] if local else None,
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") if local else None,
    )
    sm = session.client("secretsmanager")
    return KeyAdmin(KeysTable(ddb, cfg.keys_table), CountersTable(ddb, cfg.counters_table), Pepper(cfg, lambda: sm))


# ---------------------------------------------------------------------------------------------------------- output
def _emit(args: argparse.Namespace, data: Any, human: str, out: TextIO) -> None:
    if getattr(args, "json", False):
        out.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    else:
        out.write(human.rstrip("\n") + "\n")


def _when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts)) if ts else "-"


def _describe(rec: Any) -> str:
    lines = [
        f"key id     {rec.key_id}",
        f"name       {rec.name}",
        f"role       {rec.role}",
        f"status     {rec.status}{'  (canary)' if rec.canary else ''}",
        f"created    {_when(rec.created_at)}",
        f"expires    {_when(rec.expires_at)}",
        f"last used  {_when(rec.last_used_at)}",
        f"secrets    {len(rec.hashes)}"
        + "".join(f" (one valid until {_when(h.not_after)})" for h in rec.hashes if h.not_after),
    ]
    if rec.tenant:
        lines.append(f"tenant     {rec.tenant}")
    from bulwark.limits.spend import micros_to_usd

    for period in ("day", "month"):
        budget = getattr(rec.limits, f"budget_{period}_micro_usd")
        if budget is not None:
            lines.append(f"budget     ${micros_to_usd(budget)} per {period}")
    if rec.allow_cidrs:
        lines.append(f"allow from {', '.join(rec.allow_cidrs)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------- commands
def cmd_keys_create(args: argparse.Namespace, out: TextIO) -> int:
    from bulwark.auth.key_admin import parse_duration
    from bulwark.limits.spend import parse_budget
    from bulwark.store.keys_table import LimitOverrides

    _check_role(args.role)
    expires = parse_duration(args.expires_in) if args.expires_in else None
    budgets: dict[str, int] = {}
    for text in args.budget or ():
        try:
            micros, period = parse_budget(text)
        except ValueError as exc:
            raise CliError(f"--budget {text}: {exc}") from None
        budgets[f"budget_{period}_micro_usd"] = micros
    limits = LimitOverrides(
        requests_per_minute=args.rpm,
        tokens_per_minute=args.tpm,
        daily_tokens=args.daily_tokens,
        max_concurrent=args.max_concurrent,
        **budgets,
    )
    admin = _admin(args)
    api_key, rec = admin.create(
        name=args.name,
        role=args.role,
        expires_in=expires,
        allow_cidrs=tuple(args.allow_cidr or ()),
        tenant=args.tenant,
        canary=args.canary,
        limits=limits,
    )
    _usage_plan_register(args, f"key:{rec.key_id}", args.name)
    human = (
        f"{api_key}\n\nCreated key {rec.key_id} ({rec.name}, role {rec.role}, expires {_when(rec.expires_at)}).\n"
        "This is the only time the key is shown: store it in a secret manager now."
    )
    _emit(args, {"api_key": api_key, **rec.public_view()}, human, out)
    return EXIT_OK


def _usage_plan_register(args: argparse.Namespace, principal: str, name: str, *, disable: bool = False) -> None:
    """On a deployed stack with a usage plan, keep its API Gateway meter in step with the Bulwark key."""
    env = _target_env(args)
    plan = env.get("BULWARK_USAGE_PLAN_ID")
    if not plan:
        return
    import boto3

    from bulwark.auth.usage_plan import disable_key, register_key

    client = boto3.client("apigateway", region_name=env.get("AWS_REGION"))
    if disable:
        disable_key(client, principal)
    else:
        register_key(client, plan, principal, name)


def _check_role(role: str) -> None:
    from bulwark.policy import current_policy

    try:
        policy = current_policy()
    except PolicyError:
        return  # the stack's policy may differ from this machine's; the authorizer refuses unknown roles anyway
    if role not in policy.roles:
        raise CliError(f"Role '{role}' is not in the policy (roles: {', '.join(sorted(policy.roles))}).")


def cmd_keys_list(args: argparse.Namespace, out: TextIO) -> int:
    records = _admin(args).keys.list()
    rows = [f"{'KEY ID':<13} {'NAME':<20} {'ROLE':<12} {'STATUS':<9} {'EXPIRES':<21} LAST USED"]
    rows += [
        f"{r.key_id:<13} {r.name[:20]:<20} {r.role[:12]:<12} {r.status + ('*' if r.canary else ''):<9} "
        f"{_when(r.expires_at):<21} {_when(r.last_used_at)}"
        for r in records
    ]
    if not records:
        rows.append("(no keys yet: create one with `bulwark keys create --name NAME --role ROLE`)")
    _emit(args, [r.public_view() for r in records], "\n".join(rows), out)
    return EXIT_OK


def _get(admin: Any, key_id: str) -> Any:
    from bulwark.auth import keys as keyfmt

    if not keyfmt.is_key_id(key_id):
        raise CliError("A key id is 12 letters and digits (see `bulwark keys list`); never pass the key itself.")
    rec = admin.keys.get(key_id)
    if rec is None:
        raise CliError(f"No key with id {key_id}. See `bulwark keys list`.")
    return rec


def cmd_keys_show(args: argparse.Namespace, out: TextIO) -> int:
    rec = _get(_admin(args), args.key_id)
    _emit(args, rec.public_view(), _describe(rec), out)
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace, out: TextIO) -> int:
    from bulwark.auth.key_admin import parse_duration
    from bulwark.store.keys_table import KeyNotFound

    admin = _admin(args)
    _get(admin, args.key_id)
    try:
        api_key, rec = admin.rotate(args.key_id, parse_duration(args.grace))
    except KeyNotFound:
        raise CliError(f"Key {args.key_id} is not active; only active keys can be rotated.") from None
    human = (
        f"{api_key}\n\nRotated key {rec.key_id}: the new secret works now;"
        f" the old one keeps working for {args.grace}.\n"
        "This is the only time the new key is shown."
    )
    _emit(args, {"api_key": api_key, **rec.public_view()}, human, out)
    return EXIT_OK


def cmd_keys_rotate_pepper(args: argparse.Namespace, out: TextIO) -> int:
    admin = _admin(args)
    if args.status:
        versions = admin.pepper_versions_in_use()
        current, _ = admin.pepper.current()
        rows = [f"current pepper version: {current}"]
        rows += [f"version {v}: {len(ids)} key(s): {' '.join(ids)}" for v, ids in versions.items()]
        data = {"current": current, "in_use": {str(v): ids for v, ids in versions.items()}}
        _emit(args, data, "\n".join(rows), out)
        return EXIT_OK
    updated = admin.pepper.rotate()
    human = (
        f"The key-hashing secret now has version {updated.current} (current); versions kept: "
        f"{', '.join(str(v) for v in sorted(updated.values))}.\n"
        "Issued keys keep working under the version they were hashed with. New and rotated keys use the new one.\n"
        "Move keys with `bulwark keys rotate ID`; `bulwark keys rotate-pepper --status` shows the versions in use."
    )
    _emit(args, {"current": updated.current, "versions": sorted(updated.values)}, human, out)
    return EXIT_OK


def cmd_keys_revoke(args: argparse.Namespace, out: TextIO) -> int:
    admin = _admin(args)
    _get(admin, args.key_id)
    rec = admin.revoke(args.key_id)
    _usage_plan_register(args, f"key:{rec.key_id}", rec.name, disable=True)
    _emit(
        args,
        rec.public_view(),
        f"Revoked key {rec.key_id}. Model calls stop at once; other routes within 60 seconds.",
        out,
    )
    return EXIT_OK


def checked_policy(path: Path, *, local: bool | None, as_json: bool, out: TextIO) -> Policy | None:
    """The policy in `path`, validated as `bulwark policy check` does. Invalid: with --json the errors are written to
    `out` and None returned (exit status 1); otherwise CliError with the same messages."""
    from bulwark.policy import load_policy_file

    try:
        return load_policy_file(path, local=local)
    except PolicyError as exc:
        if as_json:
            out.write(json.dumps({"ok": False, "file": str(path), "errors": str(exc).splitlines()}, indent=2) + "\n")
            return None
        raise CliError(str(exc)) from None


def cmd_policy_check(args: argparse.Namespace, out: TextIO) -> int:
    from bulwark.policy import default_policy_path

    path = (
        Path(args.file)
        if args.file
        else (Path("policy.yaml") if Path("policy.yaml").exists() else default_policy_path())
    )
    policy = checked_policy(path, local=True if args.local else None, as_json=args.json, out=out)
    if policy is None:
        return EXIT_ERROR
    summary = {
        "ok": True,
        "file": str(path),
        "models": sorted(policy.models),
        "roles": sorted(policy.roles),
        "issuers": [i.name for i in policy.issuers],
    }
    _emit(
        args,
        summary,
        f"{path}: valid ({len(policy.models)} models, {len(policy.roles)} roles, {len(policy.issuers)} issuers)",
        out,
    )
    return EXIT_OK


def cmd_policy_schema(args: argparse.Namespace, out: TextIO) -> int:
    from bulwark.policy import policy_json_schema

    if args.appconfig:
        from bulwark_dev.appconfig_schema import appconfig_policy_schema_text

        out.write(appconfig_policy_schema_text() + "\n")
        return EXIT_OK
    out.write(json.dumps(policy_json_schema(), indent=2, sort_keys=True) + "\n")
    return EXIT_OK


def cmd_local(args: argparse.Namespace, out: TextIO) -> int:
    from bulwark_dev.local.stack import LocalStack, run_until_interrupted

    root = _project_root()
    policy = Path(args.policy).resolve() if args.policy else None
    if policy is not None:
        from bulwark.policy import load_policy_file

        try:
            load_policy_file(policy, local=True)
        except PolicyError as exc:
            raise CliError(str(exc)) from None
    stack = LocalStack(project_root=root, port=args.port, policy_file=policy)
    try:
        stack.start()
        api_key = _demo_key(stack)
    except BaseException:
        stack.stop()
        raise
    info = {
        "base_url": stack.base_url,
        "openai_base_url": stack.base_url + "/v1",
        "api_key": api_key,
        "model": "demo-echo",
        "dynamodb_endpoint": stack.dynamodb_endpoint,
    }
    human = f"""
Bulwark is running at {stack.base_url}   (Ctrl-C stops everything)

  Demo API key (role developer):  {api_key}
  Demo model:                     demo-echo (a local echo server, not a real model)

  curl {stack.base_url}/v1/chat/completions \\
    -H "Authorization: Bearer {api_key}" -H "Content-Type: application/json" \\
    -d '{{"model": "demo-echo", "messages": [{{"role": "user", "content": "Hello"}}]}}'

  python -c "from openai import OpenAI; c = OpenAI(base_url='{stack.base_url}/v1', api_key='{api_key}'); \\
r = c.chat.completions.create(model='demo-echo', messages=[{{'role': 'user', 'content': 'Hello'}}]); \\
print(r.choices[0].message.content)"

  More keys:  bulwark keys create --name my-app --role developer
  Policy:     bulwark policy push --stack bulwark-local my-policy.yaml   (in force within 45 s, no restart)
"""
    _emit(args, info, human, out)
    out.flush()
    run_until_interrupted(stack)
    return EXIT_OK


def _demo_key(stack: Any) -> str:
    import boto3

    from bulwark.auth.key_admin import KeyAdmin
    from bulwark.auth.pepper import Pepper
    from bulwark.settings import Settings
    from bulwark.store.counters_table import CountersTable
    from bulwark.store.keys_table import KeysTable

    env = stack.cli_environment()
    cfg = Settings.from_env(env)
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=env["AWS_ENDPOINT_URL_DYNAMODB"],
        region_name=cfg.region,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    admin = KeyAdmin(KeysTable(ddb, cfg.keys_table), CountersTable(ddb, cfg.counters_table), Pepper(cfg))
    api_key, _ = admin.create(name="demo", role="developer", expires_in=7 * 86_400)
    return api_key


def _project_root() -> Path:
    for d in (Path.cwd(), *Path.cwd().parents):
        if (d / "template.yaml").exists():
            return d
    raise CliError("No template.yaml here or above: run `bulwark local` from the Bulwark project folder.")


# ---------------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument("--stack", help="a deployed stack's name (default: the running `bulwark local`)")
    target.add_argument("--region", help="AWS region of --stack")

    p = argparse.ArgumentParser(prog="bulwark", description="Bulwark: a protection layer for AI model APIs.")
    sub = p.add_subparsers(dest="command", required=True)

    loc = sub.add_parser("local", parents=[common], help="run the whole stack on this machine (no Docker)")
    loc.add_argument("--port", type=int, default=3000)
    loc.add_argument("--policy", help="policy file (default: the one in the layer)")
    loc.set_defaults(func=cmd_local)

    keys = sub.add_parser("keys", help="API key lifecycle").add_subparsers(dest="keys_command", required=True)
    c = keys.add_parser("create", parents=[common, target], help="create a key (shown once)")
    c.add_argument("--name", required=True)
    c.add_argument("--role", required=True)
    c.add_argument("--expires-in", help="e.g. 90d, 24h (default: never)")
    c.add_argument("--allow-cidr", action="append", help="only accept the key from this network (repeatable)")
    c.add_argument("--tenant")
    c.add_argument("--canary", action="store_true", help="a honeytoken: never authorizes, alerts when presented")
    c.add_argument("--rpm", type=int, help="override the role's requests per minute")
    c.add_argument("--tpm", type=int, help="override the role's tokens per minute")
    c.add_argument("--daily-tokens", type=int, help="override the role's daily token quota")
    c.add_argument("--max-concurrent", type=int, help="cap requests in flight")
    c.add_argument(
        "--budget", action="append", help="money cap in US dollars per UTC day or month, e.g. 50/month (repeatable)"
    )
    c.set_defaults(func=cmd_keys_create)
    ls = keys.add_parser("list", parents=[common, target], help="list keys")
    ls.set_defaults(func=cmd_keys_list)
    for name, func, helptext in (("show", cmd_keys_show, "show one key"), ("revoke", cmd_keys_revoke, "revoke a key")):
        sp = keys.add_parser(name, parents=[common, target], help=helptext)
        sp.add_argument("key_id")
        sp.set_defaults(func=func)
    r = keys.add_parser("rotate", parents=[common, target], help="new secret, same key id, old one valid for --grace")
    r.add_argument("key_id")
    r.add_argument("--grace", default="24h")
    r.set_defaults(func=cmd_keys_rotate)
    rp = keys.add_parser(
        "rotate-pepper",
        parents=[common, target],
        help="add a new version of the key-hashing secret (issued keys keep working); --status: versions in use",
    )
    rp.add_argument("--status", action="store_true", help="only show the current version and the keys per version")
    rp.set_defaults(func=cmd_keys_rotate_pepper)

    pol = sub.add_parser("policy", help="policy file tools").add_subparsers(dest="policy_command", required=True)
    pc = pol.add_parser("check", parents=[common], help="validate a policy file")
    pc.add_argument("file", nargs="?")
    pc.add_argument(
        "--local", action="store_true", help="check as `bulwark local` loads it (plain http to loopback allowed)"
    )
    pc.set_defaults(func=cmd_policy_check)
    ps = pol.add_parser("schema", help="print the policy's JSON Schema")
    ps.add_argument("--appconfig", action="store_true", help="as the AppConfig profile's validator has it (draft 04)")
    ps.set_defaults(func=cmd_policy_schema)
    from bulwark_dev.policy_push import register as register_push

    register_push(pol, common)

    _add_optional_commands(sub, common)
    return p


def _add_optional_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Commands contributed by other modules (audit, report, janitor) register themselves here."""
    try:
        from bulwark_dev.audit_cli import register
    except ImportError:
        return
    register(sub, common)
    from bulwark_dev.invoke_cli import register as register_invoke

    register_invoke(sub, common)
    from bulwark_dev.verify import register as register_verify

    register_verify(sub, common)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args, out))
    except CliError as exc:
        sys.stderr.write(f"bulwark: {exc}\n")
        return EXIT_ERROR
    except StoreUnavailable:
        sys.stderr.write(
            "bulwark: cannot reach the key store. Is `bulwark local` running, or are --stack and your AWS "
            "credentials right?\n"
        )
        return EXIT_ERROR
    except BulwarkError as exc:
        sys.stderr.write(f"bulwark: {exc.message}\n")
        return EXIT_ERROR
    except ValueError as exc:
        sys.stderr.write(f"bulwark: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
