"""The policy file: validated at load, errors name the line, references checked, schema published."""

from pathlib import Path

import pytest

from bulwark.policy import PolicyError, default_policy_path, load_policy_file, parse_policy, policy_json_schema

GOOD = """
version: 1
models:
  m1:
    upstream: {kind: openai, url: "https://example.invalid/v1"}
roles:
  r1:
    models: [m1]
"""


def test_shipped_policy_is_valid() -> None:
    policy = load_policy_file(default_policy_path())
    assert "demo-echo" in policy.models
    assert policy.default_model == "demo-echo"


def test_minimal_policy_gets_safe_defaults() -> None:
    policy = parse_policy(GOOD)
    role = policy.roles["r1"]
    assert role.guardrails.prompt_injection == "block"
    assert role.fail_open is False
    assert role.allows_model("m1") and not role.allows_model("m2")


def test_unknown_key_is_an_error_naming_the_line() -> None:
    bad = GOOD + "    requests_per_minit: 5\n"
    with pytest.raises(PolicyError) as err:
        parse_policy(bad, "p.yaml")
    assert "p.yaml:9" in str(err.value)  # GOOD starts with a blank line
    assert "requests_per_minit" in str(err.value)


def test_role_naming_a_missing_model_is_refused() -> None:
    with pytest.raises(PolicyError, match="not in models"):
        parse_policy(GOOD.replace("models: [m1]", "models: [m9]"))


def test_bad_cidr_is_refused() -> None:
    with pytest.raises(PolicyError, match="network"):
        parse_policy(GOOD + "network:\n  deny_cidrs: ['10.0.0.0/33']\n")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("version: 1\nmodels: [\n")
    with pytest.raises(PolicyError, match=r"p.yaml:\d+"):
        load_policy_file(f)


def test_schema_is_published() -> None:
    schema = policy_json_schema()
    assert "models" in schema["properties"] and "roles" in schema["properties"]


def test_a_broken_input_schema_is_refused_at_load() -> None:
    bad = GOOD.replace(
        'upstream: {kind: openai, url: "https://example.invalid/v1"}',
        'upstream: {kind: openai, url: "https://example.invalid/v1"}\n    input_schema: {type: 42}',
    )
    with pytest.raises(PolicyError, match="input_schema"):
        parse_policy(bad)


def test_every_model_calling_role_of_the_shipped_policy_caps_requests_in_flight() -> None:
    # One key must not be able to fill the invoker's reserved concurrency (issue 16, item 6).
    from cfnlint.decode import decode

    template, errors = decode(str(Path(__file__).resolve().parents[2] / "template.yaml"))
    assert not errors and template is not None
    invoker_reserved = int(template["Parameters"]["InvokerReservedConcurrency"]["Default"])
    policy = load_policy_file(default_policy_path())
    calling = {name: role for name, role in policy.roles.items() if {"chat", "invoke"} & set(role.routes)}
    assert calling
    for name, role in calling.items():
        assert role.limits.max_concurrent is not None, name
        assert role.limits.max_concurrent < invoker_reserved, name


def test_trusted_cidrs_are_validated() -> None:
    with pytest.raises(PolicyError):
        parse_policy(GOOD + "network:\n  failed_auth:\n    trusted_cidrs: ['10.0.0.0/33']\n")


URL_CASES = [
    ("https://api.example.com/v1", True, True),
    ("http://127.0.0.1:8080/v1", False, True),
    ("http://127.9.9.9/v1", False, True),
    ("http://localhost:3001/v1", False, True),
    ("http://[::1]:9/v1", False, True),
    ("http://api.example.com/v1", False, False),
    ("http://127.0.0.1.evil.example/v1", False, False),
    ("http://localhost@evil.example/v1", False, False),
    ("ftp://api.example.com/v1", False, False),
    ("https:///v1", False, False),
]


@pytest.mark.parametrize(("url", "deployed_ok", "local_ok"), URL_CASES)
@pytest.mark.parametrize("local", [False, True])
@pytest.mark.parametrize("field", ["upstream", "jwks"])
def test_upstream_and_jwks_urls_need_https_plain_http_only_on_loopback_under_bulwark_local(
    url: str, deployed_ok: bool, local_ok: bool, local: bool, field: str
) -> None:
    """Given a policy naming `url` as a model's upstream or an issuer's JWKS, when it is validated deployed or as
    `bulwark local` runs it, then https passes everywhere, plain http passes only to loopback under bulwark local,
    and the error names the field (the host is parsed: no prefix trick reaches another host)."""
    if field == "upstream":
        text = GOOD.replace('"https://example.invalid/v1"', f'"{url}"')
        name = "url"
    else:
        text = GOOD + (
            f'issuers:\n  - name: idp\n    issuer: https://idp.example.com\n    audience: api\n    jwks_url: "{url}"\n'
        )
        name = "jwks_url"
    if local_ok if local else deployed_ok:
        parse_policy(text, local=local)
    else:
        with pytest.raises(PolicyError, match=rf"{name}: Value error, .*(https|plain http)"):
            parse_policy(text, local=local)


def test_bulwark_local_mode_comes_from_the_environment_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    text = GOOD.replace('"https://example.invalid/v1"', '"http://127.0.0.1:3001/v1"')
    monkeypatch.delenv("BULWARK_LOCAL", raising=False)
    with pytest.raises(PolicyError, match="only `bulwark local` accepts"):
        parse_policy(text)
    monkeypatch.setenv("BULWARK_LOCAL", "1")
    assert parse_policy(text).models["m1"].upstream.url == "http://127.0.0.1:3001/v1"
