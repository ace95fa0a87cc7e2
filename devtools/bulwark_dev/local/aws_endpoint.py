"""The local stack's AWS endpoint: every AWS call a function makes is authorized against its role, as AWS would.

Each function gets its own local credentials (``AWS_ACCESS_KEY_ID`` mapped to its role) and its AWS endpoint
variables point here. For each request the endpoint

1. verifies the SigV4 signature with that function's secret (an unsigned or mis-signed call is refused, as AWS does);
2. finds the action, the resource ARNs and the condition keys from the request (DynamoDB ``X-Amz-Target`` and the
   tables, keys and attributes in the body; Lambda's path; KMS's ``KeyId``);
3. evaluates the role's identity policies from ``template.yaml`` (re-read when the file changes) and, for KMS, the
   key policy too; a DynamoDB table encrypted with a customer-managed key also needs ``kms:Decrypt`` via DynamoDB;
4. answers a refusal in the service's own AccessDenied shape, or forwards the call: DynamoDB to DynamoDB Local,
   Lambda Invoke to the function's worker, KMS to the stand-in below (GenerateMac / VerifyMac, HMAC keys).
   AppConfig to local/appconfig_service.py (the policy's profile, and its control plane for the local operator).
   Lambda InvokeWithResponseStream is authorized as AWS does it (``lambda:InvokeFunction``) and its event stream is
   relayed to the caller piece by piece as the function writes it (chunked, never buffered).

What the Lambda platform itself does with the role (write logs, send traces, decrypt the environment, check the
dead-letter queue) is authorized by ``platform_check`` when a worker starts.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import http.client
import json
import os
import re
import secrets
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bulwark.aws.eventstream import CONTENT_TYPE as EVENTSTREAM_TYPE
from bulwark.aws.eventstream import event as eventstream_event
from bulwark.aws.sigv4 import canonical_query, derive_signing_key, string_to_sign
from bulwark_dev.local._http import ConnectionPool, FastHandler, QuietServer, Response, serve_in_thread
from bulwark_dev.local.appconfig_service import OPERATOR, AppConfigError, AppConfigStandIn, operator_identity
from bulwark_dev.local.appconfig_service import error_response as appconfig_error
from bulwark_dev.local.dynamodb_local import DUMMY_CREDENTIALS
from bulwark_dev.local.iam_policy import ContextValue, Statement, evaluate
from bulwark_dev.local.iam_roles import FunctionIdentity, KmsKey, RoleBook, RoleModel, SecretSpec
from bulwark_dev.local.stream_transport import READ_SIZE, STREAM_PREFIX, STREAM_SUFFIX
from bulwark_dev.local.template_model import LOCAL_ACCOUNT, LOCAL_REGION

_MAX_BODY = 16 * 1024 * 1024
_INVOKE_PREFIX = "/2015-03-31/functions/"
_HOP_BY_HOP = ("content-length", "transfer-encoding", "connection", "date", "keep-alive")
_CLOCK_SKEW = dt.timedelta(minutes=15)  # AWS refuses a signature older or newer than this
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<headers>[^,]+),\s*Signature=(?P<signature>[0-9a-f]{64})"
)


@dataclass(frozen=True, slots=True)
class Check:
    """One authorization AWS would make for a call (a call can need several: each table of a batch, the KMS key)."""

    action: str
    resource: str
    context: Mapping[str, ContextValue]


@dataclass(frozen=True, slots=True)
class Denial:
    function: str  # logical id
    action: str
    resource: str
    reason: str  # implicit_deny / explicit_deny / key_policy
    statement: str | None  # the Deny that refused, if any


class RelayedStream:
    """An open streaming answer (the Lambda router's, the SageMaker stand-in's), relayed to the caller piece by piece
    (see send_relayed)."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        conn: http.client.HTTPConnection,
        answer: http.client.HTTPResponse,
        frame: Callable[[bytes], bytes] = bytes,
    ) -> None:
        self.status = status
        self.headers = headers
        self._conn = conn
        self._answer = answer
        self._frame = frame  # how each piece goes out (as it came, or wrapped in the service's event)

    def pieces(self) -> Iterable[bytes]:
        """The body as it arrives (de-chunked), until the upstream ends it; OSError if the stream breaks."""
        while True:
            data = self._answer.read1(READ_SIZE)
            if not data:
                return
            yield self._frame(data)

    def close(self) -> None:
        self._conn.close()  # the router sees the caller go away and closes the function's stream


def send_relayed(handler: FastHandler, relayed: RelayedStream) -> None:
    """Write ``relayed`` on ``handler``'s connection with chunked transfer, each piece flushed as it comes. A broken
    upstream cuts the body short (no final chunk), as a dropped connection would in AWS; a caller that goes away
    closes the upstream stream."""
    reason = handler.responses.get(relayed.status, ("",))[0]
    lines = [f"HTTP/1.1 {relayed.status} {reason}", *(f"{k}: {v}" for k, v in relayed.headers)]
    lines += ["Transfer-Encoding: chunked", f"Date: {handler.date_time_string()}"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace")
    wfile = handler.wfile
    try:
        wfile.write(head)
        wfile.flush()
        for piece in relayed.pieces():
            wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            wfile.flush()
        wfile.write(b"0\r\n\r\n")
        wfile.flush()
    except (OSError, http.client.HTTPException):
        handler.close_connection = True  # cut short: this connection cannot carry another response
    finally:
        relayed.close()


class Journal:
    """Every refusal the endpoint made, in order: tests read it to prove which statement a call needs. With
    ``keep_checks`` on, also every authorization asked for (allowed or not), so a test can replay them against other
    roles (AwsEndpoint.refusal) instead of running the calls again; off by default, as a running stack would grow it
    without end."""

    def __init__(self, on_denied: Callable[[Denial], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._denials: list[Denial] = []
        self._checks: list[tuple[str, Check]] = []
        self._on_denied = on_denied
        self.allowed = 0
        self.keep_checks = False

    def record(self, denial: Denial) -> None:
        with self._lock:
            self._denials.append(denial)
        if self._on_denied is not None:
            self._on_denied(denial)

    def asked(self, logical_id: str, check: Check) -> None:
        if self.keep_checks:
            with self._lock:
                self._checks.append((logical_id, check))

    def denials(self) -> list[Denial]:
        with self._lock:
            return list(self._denials)

    def checks(self) -> list[tuple[str, Check]]:
        """(function logical id, check) for every authorization asked for while ``keep_checks`` was on, in order."""
        with self._lock:
            return list(self._checks)

    def clear(self) -> None:
        with self._lock:
            self._denials.clear()
            self._checks.clear()


# ------------------------------------------------------------------------------------------------------- signatures


def signature_valid(
    method: str, raw_path: str, headers: Mapping[str, str], body: bytes, secret: str, now: dt.datetime | None = None
) -> bool:
    """SigV4 as AWS checks it: the canonical request rebuilt from what arrived, the signature compared in constant
    time, the timestamp within 15 minutes."""
    lowered = {k.lower(): v for k, v in headers.items()}
    match = _AUTH.fullmatch(lowered.get("authorization", "").strip())
    stamp = lowered.get("x-amz-date", "")
    if match is None or not stamp.startswith(match["date"]):
        return False
    try:
        when = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return False
    if abs((now or dt.datetime.now(dt.UTC)) - when) > _CLOCK_SKEW:
        return False
    names = match["headers"].split(";")
    if "host" not in names or any(name not in lowered for name in names):
        return False
    path, _, query = raw_path.partition("?")
    payload_hash = lowered.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    if payload_hash != "UNSIGNED-PAYLOAD" and payload_hash != hashlib.sha256(body).hexdigest():
        return False
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(path or "/", safe="/~"),
            canonical_query(urllib.parse.parse_qsl(query, keep_blank_values=True)),
            "".join(f"{name}:{' '.join(lowered[name].split())}\n" for name in names),
            match["headers"],
            payload_hash,
        ]
    )
    scope = f"{match['date']}/{match['region']}/{match['service']}/aws4_request"
    key = derive_signing_key(secret, match["date"], match["region"], match["service"])
    expected = hmac.new(key, string_to_sign(stamp, scope, canonical).encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match["signature"])


# -------------------------------------------------------------------------------------------- DynamoDB: what a call is

_EXPRESSION_WORDS = {
    "set",
    "remove",
    "add",
    "delete",
    "and",
    "or",
    "not",
    "between",
    "in",
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "contains",
    "size",
    "if_not_exists",
    "list_append",
}
_TOKEN = re.compile(r"#[A-Za-z0-9_]+|:[A-Za-z0-9_]+|[A-Za-z_][A-Za-z0-9_]*")


def expression_attributes(expression: str | None, names: Mapping[str, str] | None) -> set[str]:
    """The top-level attribute names an expression touches (``#n`` placeholders resolved, values and functions out)."""
    found: set[str] = set()
    if not expression:
        return found
    # Only the first path element counts: a.b[2].c touches the top-level attribute a.
    for path in re.split(r"[\s,()=<>+\-]+", expression):
        head = re.split(r"[.\[]", path, maxsplit=1)[0]
        token = _TOKEN.fullmatch(head)
        if token is None or head.startswith(":") or head.lower() in _EXPRESSION_WORDS:
            continue
        found.add((names or {}).get(head, head) if head.startswith("#") else head)
    return found


def _key_value(attribute: Mapping[str, Any] | None) -> str | None:
    if not attribute:
        return None
    ((_, value),) = attribute.items()
    return str(value)


def _table_checks(
    action: str,
    params: Mapping[str, Any],
    model: RoleModel,
    table_name: str,
    items: Iterable[Mapping[str, Any]],
    attributes: set[str] | None,
) -> list[Check]:
    """The check on one table (with its condition keys), and the KMS one its customer-managed key needs."""
    table = model.tables.get(table_name)
    arn = table.arn if table else f"arn:aws:dynamodb:{LOCAL_REGION}:{LOCAL_ACCOUNT}:table/{table_name}"
    context: dict[str, ContextValue] = {
        "aws:PrincipalAccount": LOCAL_ACCOUNT,
        "dynamodb:ReturnValues": str(params.get("ReturnValues", "NONE")),
    }
    if "Select" in params:
        context["dynamodb:Select"] = str(params["Select"])
    if table is None:
        return [Check(action, arn, context)]
    leading = sorted({v for item in items if (v := _key_value(item.get(table.hash_key))) is not None})
    if leading:
        context["dynamodb:LeadingKeys"] = leading
    if attributes is not None:
        keys = {table.hash_key} | ({table.range_key} if table.range_key else set())
        context["dynamodb:Attributes"] = sorted(attributes | keys)
    checks = [Check(action, arn, context)]
    if table.sse_key_arn:
        # A customer-managed table key: DynamoDB decrypts it with KMS on the caller's behalf.
        via = {"kms:ViaService": f"dynamodb.{LOCAL_REGION}.amazonaws.com", "kms:CallerAccount": LOCAL_ACCOUNT}
        checks.append(Check("kms:Decrypt", table.sse_key_arn, via))
    return checks


def _batch_checks(operation: str, params: Mapping[str, Any], model: RoleModel) -> list[Check]:
    """BatchGetItem / BatchWriteItem: AWS authorizes the batch action on each table it names."""
    checks: list[Check] = []
    for table_name, request in (params.get("RequestItems") or {}).items():
        if operation == "BatchGetItem":
            names = request.get("ExpressionAttributeNames")
            touched = expression_attributes(request.get("ProjectionExpression"), names) or None
            items = request.get("Keys") or []
        else:
            touched = None
            items = [
                (w.get("PutRequest") or {}).get("Item") or (w.get("DeleteRequest") or {}).get("Key") or {}
                for w in request
            ]
        checks += _table_checks(f"dynamodb:{operation}", params, model, table_name, items, touched)
    return checks


_TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem", "Get": "GetItem"}


def dynamodb_checks(operation: str, params: Mapping[str, Any], model: RoleModel) -> list[Check]:
    """The authorizations DynamoDB makes for one call: the action on each table, with the condition keys."""
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return _batch_checks(operation, params, model)
    if operation in ("TransactWriteItems", "TransactGetItems"):
        checks: list[Check] = []
        for entry in params.get("TransactItems") or []:
            ((kind, inner),) = entry.items()
            checks += dynamodb_checks(_TRANSACT_ACTIONS.get(kind, kind), inner, model)
        return checks
    names = params.get("ExpressionAttributeNames")
    attributes: set[str] | None = None
    if operation == "UpdateItem":
        attributes = expression_attributes(params.get("UpdateExpression"), names)
        attributes |= expression_attributes(params.get("ConditionExpression"), names)
    elif operation == "PutItem":
        attributes = set((params.get("Item") or {}).keys())
    elif operation in ("GetItem", "Query", "Scan"):
        attributes = expression_attributes(params.get("ProjectionExpression"), names) or None
    items = [params[k] for k in ("Key", "Item") if isinstance(params.get(k), Mapping)]
    table_name = str(params.get("TableName", ""))
    return _table_checks(f"dynamodb:{operation}", params, model, table_name, items, attributes)


# ---------------------------------------------------------------------------------------------------- KMS stand-in


class KmsStandIn:
    """GenerateMac / VerifyMac (HMAC_SHA_256) for the template's HMAC keys; key material kept owner-only on disk."""

    def __init__(self, state_dir: Path | None) -> None:
        self._dir = state_dir
        self._memory: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def material(self, key: KmsKey) -> bytes:
        with self._lock:
            if key.key_id in self._memory:
                return self._memory[key.key_id]
            material = secrets.token_bytes(32)
            if self._dir is not None:
                self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                path = self._dir / f"{key.key_id}.key"
                try:
                    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(descriptor, "wb") as handle:
                        handle.write(material)
                except FileExistsError:
                    material = path.read_bytes()
            self._memory[key.key_id] = material
            return material

    def call(self, operation: str, params: Mapping[str, Any], key: KmsKey) -> tuple[int, dict[str, Any]]:
        if key.key_usage != "GENERATE_VERIFY_MAC" or not key.key_spec.startswith("HMAC_"):
            return 400, {"__type": "InvalidKeyUsageException", "message": f"{key.arn} key usage is {key.key_usage}"}
        algorithm = str(params.get("MacAlgorithm", ""))
        if algorithm != "HMAC_SHA_256" or key.key_spec != "HMAC_256":
            return 400, {"__type": "InvalidKeyUsageException", "message": f"{algorithm} is not valid for {key.arn}"}
        try:
            message = base64.b64decode(str(params.get("Message", "")), validate=True)
        except ValueError:
            return 400, {"__type": "ValidationException", "message": "Message is not base64"}
        if not 1 <= len(message) <= 4096:
            return 400, {"__type": "ValidationException", "message": "Message must be 1 to 4096 bytes"}
        mac = hmac.new(self.material(key), message, hashlib.sha256).digest()
        if operation == "GenerateMac":
            return 200, {"KeyId": key.arn, "Mac": base64.b64encode(mac).decode(), "MacAlgorithm": algorithm}
        try:
            given = base64.b64decode(str(params.get("Mac", "")), validate=True)
        except ValueError:
            return 400, {"__type": "ValidationException", "message": "Mac is not base64"}
        if not hmac.compare_digest(given, mac):
            return 400, {"__type": "KMSInvalidMacException", "message": "The MAC is not valid"}
        return 200, {"KeyId": key.arn, "MacValid": True, "MacAlgorithm": algorithm}


# ------------------------------------------------------------------------------------------------------- the endpoint


def _denied_message(principal: str, denial: Denial) -> str:
    if denial.reason == "explicit_deny":
        why = f"with an explicit deny ({denial.statement})"
    elif denial.reason == "key_policy":
        why = f"because no resource-based policy allows the {denial.action} action"
    else:
        why = f"because no identity-based policy allows the {denial.action} action"
    return f"User: {principal} is not authorized to perform: {denial.action} on resource: {denial.resource} {why}"


class AwsEndpoint:
    """One loopback HTTP endpoint for the functions' AWS services (and AppConfig's control plane for the operator),
    with IAM enforced per caller."""

    def __init__(
        self,
        roles: RoleBook,
        *,
        dynamodb_url: str,
        lambda_url: str,
        dynamodb_access_key_id: str = DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        state_dir: Path | None = None,
        on_denied: Callable[[Denial], None] | None = None,
        enforce: bool = True,
        secret_values: Mapping[str, Callable[[], str]] | None = None,
        secrets_dir: Path | None = None,
        sagemaker_model_url: str | None = None,
        appconfig: AppConfigStandIn | None = None,
    ) -> None:
        # AppConfig (local/appconfig_service.py): the policy's profile; its control plane is for the local operator.
        self.appconfig = appconfig
        self._operators = {OPERATOR: operator_identity()} if appconfig is not None else {}
        # Secrets the template does not create (upstream API keys): one file per secret name, e.g.
        # <secrets_dir>/bulwark/upstream/openai holds the value of the secret "bulwark/upstream/openai".
        self._secrets_dir = secrets_dir
        # The SageMaker runtime stand-in: every endpoint is a model that speaks the OpenAI messages API (TGI/LMI
        # style), served by this URL (the demo model's /v1).
        self._sagemaker_model = None
        if sagemaker_model_url:
            parts = urllib.parse.urlsplit(sagemaker_model_url)
            self._sagemaker_model = (ConnectionPool(parts.hostname or "127.0.0.1", parts.port or 80), parts.path)
        self._secret_values = dict(secret_values or {})  # secret ARN -> its current value (a local file)
        self.roles = roles
        self.enforce = enforce  # off: every signed call is served (the KMS stand-in still needs this endpoint)
        self.journal = Journal(on_denied)
        self.kms = KmsStandIn(state_dir / "kms" if state_dir else None)
        parts = urllib.parse.urlsplit(dynamodb_url)
        self._dynamodb = ConnectionPool(parts.hostname or "127.0.0.1", parts.port or 80)
        self._dynamodb_credential = f"Credential={dynamodb_access_key_id}/"  # the stack's database (see _dynamodb_call)
        parts = urllib.parse.urlsplit(lambda_url)  # the local Lambda service (the stack's Invoke router)
        self._lambda = ConnectionPool(parts.hostname or "127.0.0.1", parts.port or 80)
        # Local credentials per function: the access key says which role signs; the secret proves it.
        self._credentials: dict[str, tuple[str, str]] = {}
        self._server = QuietServer(("127.0.0.1", 0), _make_handler(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def credentials_for(self, logical_id: str) -> dict[str, str]:
        """The environment that makes a function's AWS calls sign as its role and go through this endpoint."""
        if logical_id not in self._credentials:
            access = "ASIALOCAL" + secrets.token_hex(6).upper()
            self._credentials[logical_id] = (access, secrets.token_urlsafe(30))
        access, secret = self._credentials[logical_id]
        return {
            "AWS_ACCESS_KEY_ID": access,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_ENDPOINT_URL_DYNAMODB": self.url,
            "AWS_ENDPOINT_URL_LAMBDA": self.url,
            "AWS_ENDPOINT_URL_KMS": self.url,
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": self.url,
            "BULWARK_SECRETS_ENDPOINT_URL": self.url,  # the upstream key reader's own variable
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url,
            "AWS_ENDPOINT_URL_APPCONFIGDATA": self.url,
            "AWS_ENDPOINT_URL_APPCONFIG": self.url,
        }

    def function_for(self, access_key: str) -> tuple[str, str] | None:
        for logical_id, (access, secret) in self._credentials.items():
            if hmac.compare_digest(access, access_key):
                return logical_id, secret
        return None

    def start(self) -> None:
        self._thread = serve_in_thread(self._server, "aws-endpoint")

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()
        self._dynamodb.close()
        self._lambda.close()
        if self._sagemaker_model is not None:
            self._sagemaker_model[0].close()

    # ----------------------------------------------------------------------------------------------- authorization
    def authorize(self, logical_id: str, checks: Iterable[Check], model: RoleModel | None = None) -> Denial | None:
        """The first refusal AWS would make (recorded in the journal), or None when every check is allowed."""
        if not self.enforce:
            return None
        model = model or self.roles.current()
        identity = model.functions.get(logical_id) or self._operators.get(logical_id)
        for check in checks:
            self.journal.asked(logical_id, check)
            refused = self._refusal(model, identity, logical_id, check)
            if refused is not None:
                self.journal.record(refused)
                return refused
        self.journal.allowed += 1
        return None

    def refusal(self, model: RoleModel, logical_id: str, check: Check) -> Denial | None:
        """What AWS would answer ``check`` with under ``model``'s roles; nothing is recorded (a what-if)."""
        identity = model.functions.get(logical_id) or self._operators.get(logical_id)
        return self._refusal(model, identity, logical_id, check)

    def _refusal(
        self, model: RoleModel, identity: FunctionIdentity | None, logical_id: str, check: Check
    ) -> Denial | None:
        if identity is None:
            return Denial(logical_id, check.action, check.resource, "implicit_deny", None)
        context = {"aws:PrincipalArn": identity.role_arn, "aws:PrincipalAccount": LOCAL_ACCOUNT, **check.context}
        decision = evaluate(identity.statements, check.action, check.resource, context)
        key = model.keys.get(check.resource) if check.action.startswith("kms:") else None
        if key is not None:
            # KMS: the key policy must allow the role itself, or delegate to the account's IAM (root), and an
            # explicit Deny on either side wins.
            root = f"arn:aws:iam::{LOCAL_ACCOUNT}:root"
            direct = [s for s in key.policy.statements if _names_principal(s, identity.role_arn)]
            delegated = [s for s in key.policy.statements if _names_principal(s, root)]
            by_key = evaluate(direct + delegated, check.action, "*", context)
            if by_key.reason == "explicit_deny" or decision.reason == "explicit_deny":
                statement = by_key.statement or decision.statement
                return Denial(
                    logical_id, check.action, check.resource, "explicit_deny", statement.name if statement else None
                )
            if by_key.allowed and by_key.statement in direct:
                return None
            if by_key.allowed and decision.allowed:
                return None
            reason = "implicit_deny" if by_key.allowed else "key_policy"
            return Denial(logical_id, check.action, check.resource, reason, None)
        if decision.allowed:
            return None
        return Denial(
            logical_id,
            check.action,
            check.resource,
            decision.reason,
            decision.statement.name if decision.statement else None,
        )

    def platform_check(self, logical_id: str) -> list[Denial]:
        """What the Lambda platform does as the function's role: decrypt the environment (KmsKeyArn) at init, create
        the log stream and put log events, send trace segments (Tracing: Active), and, when the function is
        deployed, check it may send to its SQS dead-letter queue (encrypted with a customer key: via SQS)."""
        model = self.roles.current()
        identity = model.functions[logical_id]
        stream = identity.log_group_arn.removesuffix(":*") + ":log-stream:local"
        checks = [
            Check("logs:CreateLogStream", stream, {}),
            Check("logs:PutLogEvents", stream, {}),
        ]
        if identity.env_kms_key_arn:
            via = {"kms:ViaService": f"lambda.{LOCAL_REGION}.amazonaws.com"}
            checks.append(Check("kms:Decrypt", identity.env_kms_key_arn, via))
        if identity.tracing:
            checks += [Check("xray:PutTraceSegments", "*", {}), Check("xray:PutTelemetryRecords", "*", {})]
        if identity.dead_letter_arn:
            checks.append(Check("sqs:SendMessage", identity.dead_letter_arn, {}))
            if identity.dead_letter_key_arn:
                # An encrypted queue: SQS makes and opens the data key with the sender's permissions.
                via = {"kms:ViaService": f"sqs.{LOCAL_REGION}.amazonaws.com", "kms:CallerAccount": LOCAL_ACCOUNT}
                key = identity.dead_letter_key_arn
                checks += [Check("kms:GenerateDataKey", key, via), Check("kms:Decrypt", key, via)]
        denials: list[Denial] = []
        for check in checks:
            self.journal.asked(logical_id, check)
            refused = self._refusal(model, identity, logical_id, check)
            if refused is not None:
                self.journal.record(refused)
                denials.append(refused)
        return denials

    # ---------------------------------------------------------------------------------------------------- services
    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes) -> Response | RelayedStream:
        lowered = {k.lower(): v for k, v in headers.items()}
        match = _AUTH.fullmatch(lowered.get("authorization", "").strip())
        service = match["service"] if match else _guess_service(raw_path, lowered)
        found = self.function_for(match["key"]) if match else None
        if found is None:
            return _error(
                service, 403, "UnrecognizedClientException", "The security token included in the request is invalid."
            )
        logical_id, secret = found
        if not signature_valid(method, raw_path, headers, body, secret):
            return _error(
                service,
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
            )
        try:
            model = self.roles.current()
        except Exception as exc:  # a template that does not parse: nothing is allowed (fail closed)
            return _error(service, 500, "InternalFailure", f"template.yaml could not be read: {exc}")
        identity = model.functions.get(logical_id) or self._operators.get(logical_id)
        if service == "appconfig" and self.appconfig is not None:
            return self._appconfig_call(self.appconfig, model, logical_id, identity, method, raw_path, headers, body)
        if service == "dynamodb":
            return self._dynamodb_call(model, logical_id, identity, headers, lowered, body)
        if service == "lambda":
            return self._lambda_call(model, logical_id, identity, raw_path, headers, body)
        if service == "kms":
            return self._kms_call(model, logical_id, identity, lowered, body)
        if service == "secretsmanager":
            return self._secret_call(model, logical_id, identity, lowered, body)
        if service == "sagemaker":
            return self._sagemaker_call(logical_id, identity, raw_path, body)
        return _error(service, 400, "UnknownOperationException", f"{service} is not served by the local stack")

    def _appconfig_call(
        self,
        appconfig: AppConfigStandIn,
        model: RoleModel,
        logical_id: str,
        identity: FunctionIdentity | None,
        method: str,
        raw_path: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        try:
            route = appconfig.route(method, raw_path, headers, body)
            refused = self.authorize(logical_id, [Check(route.action, arn, {}) for arn in route.resources], model)
            if refused is not None:
                return _denied("appconfig", identity, refused)
            return route.answer()
        except AppConfigError as exc:
            return appconfig_error(exc.status, exc.code, exc.message, **exc.extra)

    def _dynamodb_call(
        self,
        model: RoleModel,
        logical_id: str,
        identity: FunctionIdentity | None,
        headers: Mapping[str, str],
        lowered: Mapping[str, str],
        body: bytes,
    ) -> Response:
        request = _json_request("dynamodb", lowered, body)
        if isinstance(request, Response):
            return request
        operation, params = request
        refused = self.authorize(logical_id, dynamodb_checks(operation, params, model), model)
        if refused is not None:
            return _denied("dynamodb", identity, refused)
        keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")}
        # DynamoDB Local keeps one database per access key id (it checks no signature): every function must see the
        # tables the stack created, in the stack's own database.
        for name, value in keep.items():
            if name.lower() == "authorization":
                keep[name] = re.sub(r"Credential=[^/]+/", self._dynamodb_credential, value)
        return self._dynamodb.request("POST", "/", body, keep, 30.0)

    def _lambda_call(
        self,
        model: RoleModel,
        logical_id: str,
        identity: FunctionIdentity | None,
        raw_path: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response | RelayedStream:
        path = raw_path.partition("?")[0]
        streamed = path.startswith(STREAM_PREFIX) and path.endswith(STREAM_SUFFIX)
        if streamed:  # InvokeWithResponseStream
            name = urllib.parse.unquote(path[len(STREAM_PREFIX) : -len(STREAM_SUFFIX)])
        elif path.startswith(_INVOKE_PREFIX) and path.endswith("/invocations"):  # Invoke
            name = urllib.parse.unquote(path[len(_INVOKE_PREFIX) : -len("/invocations")])
        else:
            return _error("lambda", 404, "UnknownOperationException", "only Invoke is served locally")
        short = name.rsplit(":function:", 1)[-1].split(":", 1)[0]
        arn = model.function_arns.get(short, f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{short}")
        # AWS authorizes Invoke and InvokeWithResponseStream alike, as lambda:InvokeFunction (the Lambda API reference).
        refused = self.authorize(logical_id, [Check("lambda:InvokeFunction", arn, {})], model)
        if refused is not None:
            return _denied("lambda", identity, refused)
        forwarded = {
            k: v
            for k, v in headers.items()
            if k.lower().startswith("x-amz-") and k.lower() not in ("x-amz-date", "x-amz-security-token")
        }
        forwarded["Content-Type"] = "application/json"
        if streamed:
            return self._open_lambda_stream(path, body, forwarded)
        return self._lambda.request("POST", path, body, forwarded, 900.0)  # the router applies the function's timeout

    def _open_lambda_stream(self, path: str, body: bytes, headers: dict[str, str]) -> Response | RelayedStream:
        """Start the streaming invocation at the Lambda router: an answer other than 200 (throttled, not found) is
        relayed whole; a 200 is handed back open, to be relayed as it comes (the router applies the function's
        timeout; this connection carries only this stream)."""
        host, port = self._lambda.host, self._lambda.port
        conn = http.client.HTTPConnection(host, port, timeout=900.0)
        try:
            conn.request("POST", path, body=body, headers=headers)
            answer = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            return _error("lambda", 502, "ServiceException", f"Lambda service unavailable: {type(exc).__name__}")
        kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP]
        if answer.status != 200:
            try:
                data = answer.read()
            finally:
                conn.close()
            return Response(answer.status, kept, data)
        return RelayedStream(answer.status, kept, conn, answer)

    def _kms_call(
        self,
        model: RoleModel,
        logical_id: str,
        identity: FunctionIdentity | None,
        lowered: Mapping[str, str],
        body: bytes,
    ) -> Response:
        request = _json_request("kms", lowered, body)
        if isinstance(request, Response):
            return request
        operation, params = request
        if operation not in ("GenerateMac", "VerifyMac"):
            return _error("kms", 400, "UnsupportedOperationException", f"{operation} is not served by the local stack")
        key = model.key(str(params.get("KeyId", "")))
        if key is None:
            return _error("kms", 400, "NotFoundException", f"Key '{params.get('KeyId')}' does not exist")
        check = Check(f"kms:{operation}", key.arn, {"kms:MacAlgorithm": str(params.get("MacAlgorithm", ""))})
        refused = self.authorize(logical_id, [check], model)
        if refused is not None:
            return _denied("kms", identity, refused)
        status, answer = self.kms.call(operation, params, key)
        return _json("kms", status, answer)

    def _secret_call(
        self,
        model: RoleModel,
        logical_id: str,
        identity: FunctionIdentity | None,
        lowered: Mapping[str, str],
        body: bytes,
    ) -> Response:
        request = _json_request("secretsmanager", lowered, body)
        if isinstance(request, Response):
            return request
        operation, params = request
        if operation != "GetSecretValue":
            return _error("secretsmanager", 400, "UnsupportedOperationException", f"{operation} is not served locally")
        secret_id = str(params.get("SecretId", ""))
        secret = model.secret(secret_id) or self._local_secret(secret_id)
        arn = secret.arn if secret else secret_id
        checks = [Check("secretsmanager:GetSecretValue", arn, {"secretsmanager:SecretId": arn})]
        if secret is not None and secret.kms_key_arn:
            # A customer-managed key: Secrets Manager decrypts the value with the caller's permissions.
            via = {"kms:ViaService": f"secretsmanager.{LOCAL_REGION}.amazonaws.com", "kms:CallerAccount": LOCAL_ACCOUNT}
            checks.append(Check("kms:Decrypt", secret.kms_key_arn, via))
        refused = self.authorize(logical_id, checks, model)
        if refused is not None:
            return _denied("secretsmanager", identity, refused)
        value = self._secret_values.get(arn)
        if value is None and secret is not None and self._secrets_dir is not None:
            path = self._secrets_dir / secret.name
            value = (lambda: path.read_text(encoding="utf-8").strip()) if path.is_file() else None
        if secret is None or value is None:
            return _error(
                "secretsmanager", 400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret."
            )
        answer = {
            "ARN": secret.arn,
            "Name": secret.name,
            "SecretString": value(),
            "VersionId": "00000000-0000-0000-0000-000000000001",
            "VersionStages": ["AWSCURRENT"],
        }
        return _json("secretsmanager", 200, answer)

    def _local_secret(self, secret_id: str) -> SecretSpec | None:
        """A secret by name or ARN from the local secrets folder (the upstream keys an operator creates by hand)."""
        if self._secrets_dir is None:
            return None
        name = secret_id.split(":secret:", 1)[1] if ":secret:" in secret_id else secret_id
        if ".." in name.split("/") or not (self._secrets_dir / name).is_file():
            return None
        arn = f"arn:aws:secretsmanager:{LOCAL_REGION}:{LOCAL_ACCOUNT}:secret:{name}"
        return SecretSpec(logical_id="", arn=arn, name=name, kms_key_arn=None)

    def _sagemaker_call(
        self, logical_id: str, identity: FunctionIdentity | None, raw_path: str, body: bytes
    ) -> Response | RelayedStream:
        match = re.fullmatch(r"/endpoints/([^/]+)/invocations(-response-stream)?", raw_path.partition("?")[0])
        if match is None:
            return _error("sagemaker", 404, "UnknownOperationException", "only InvokeEndpoint is served locally")
        name = urllib.parse.unquote(match[1])
        # SageMaker ARNs are lower case, whatever the endpoint name's case.
        arn = f"arn:aws:sagemaker:{LOCAL_REGION}:{LOCAL_ACCOUNT}:endpoint/{name.lower()}"
        # InvokeEndpointWithResponseStream is authorized as sagemaker:InvokeEndpoint (the SageMaker API reference).
        refused = self.authorize(logical_id, [Check("sagemaker:InvokeEndpoint", arn, {})])
        if refused is not None:
            return _denied("sagemaker", identity, refused)
        if self._sagemaker_model is None:
            return _error("sagemaker", 400, "ValidationError", f"Endpoint {name} not found.")
        pool, base = self._sagemaker_model
        if match[2]:
            return self._open_sagemaker_stream(pool.host, pool.port, f"{base}/chat/completions", body)
        answer = pool.request("POST", f"{base}/chat/completions", body, {"Content-Type": "application/json"}, 60.0)
        if answer.status >= 300:
            # InvokeEndpoint reports a model's own error as ModelError (424) with its status in the message.
            return _error("sagemaker", 424, "ModelError", f"Received client error ({answer.status}) from primary")
        kept = [("Content-Type", "application/json"), ("x-Amzn-Invoked-Production-Variant", "AllTraffic")]
        return Response(200, kept, answer.body)

    @staticmethod
    def _open_sagemaker_stream(host: str, port: int, path: str, body: bytes) -> Response | RelayedStream:
        """InvokeEndpointWithResponseStream: the model's own stream (OpenAI SSE from a messages-API container), each
        piece in a PayloadPart event as it arrives."""
        conn = http.client.HTTPConnection(host, port, timeout=60.0)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            answer = conn.getresponse()
        except (OSError, http.client.HTTPException):
            conn.close()
            return _error("sagemaker", 424, "ModelError", "Received no answer from primary")
        if answer.status >= 300:
            conn.close()
            return _error("sagemaker", 424, "ModelError", f"Received client error ({answer.status}) from primary")
        kept = [("Content-Type", EVENTSTREAM_TYPE), ("x-Amzn-Invoked-Production-Variant", "AllTraffic")]
        return RelayedStream(200, kept, conn, answer, lambda data: eventstream_event("PayloadPart", data))


def _names_principal(statement: Statement, arn: str) -> bool:
    return arn in statement.principals or "*" in statement.principals


def _guess_service(raw_path: str, lowered: Mapping[str, str]) -> str:
    if raw_path.startswith(("/2015-03-31/", "/2021-11-15/")):
        return "lambda"
    if raw_path.startswith("/endpoints/"):
        return "sagemaker"
    return "kms" if lowered.get("x-amz-target", "").startswith("TrentService") else "dynamodb"


_CONTENT_TYPES = {
    "dynamodb": "application/x-amz-json-1.0",
    "kms": "application/x-amz-json-1.1",
    "secretsmanager": "application/x-amz-json-1.1",
}


def _json_request(service: str, lowered: Mapping[str, str], body: bytes) -> tuple[str, dict[str, Any]] | Response:
    """A JSON 1.1 call (DynamoDB, KMS, Secrets Manager): the operation named by X-Amz-Target and the JSON body, or the
    service's SerializationException when the body is not a JSON object."""
    try:
        params = json.loads(body or b"{}")
    except ValueError:
        params = None
    if not isinstance(params, dict):
        return _error(service, 400, "SerializationException", "body is not a JSON object")
    return lowered.get("x-amz-target", "").rpartition(".")[2], params


def _json(service: str, status: int, body: Mapping[str, Any]) -> Response:
    data = json.dumps(body).encode()
    headers = [
        ("Content-Type", _CONTENT_TYPES.get(service, "application/json")),
        ("x-amzn-RequestId", str(uuid.uuid4())),
    ]
    return Response(status, headers, data)


def _error(service: str, status: int, code: str, message: str) -> Response:
    if service == "appconfig":
        return appconfig_error(status, code, message)
    if service in ("lambda", "sagemaker"):  # REST-JSON: the code in a header, the message in the body
        text = {"message": message} if service == "sagemaker" else {"Type": "User", "Message": message}
        data = json.dumps(text).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("x-amzn-ErrorType", code),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ]
        return Response(status, headers, data)
    if service == "dynamodb":
        # DynamoDB names AccessDenied in the coral namespace and says "Message" for it.
        kind = (
            f"com.amazon.coral.service#{code}"
            if code in ("AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException")
            else f"com.amazonaws.dynamodb.v20120810#{code}"
        )
        key = "Message" if kind.startswith("com.amazon.coral") else "message"
        return _json(service, 400 if status == 403 else status, {"__type": kind, key: message})
    return _json(service, 400 if status == 403 else status, {"__type": code, "message": message})


def _denied(service: str, identity: FunctionIdentity | None, denial: Denial) -> Response:
    principal = (
        identity.principal_arn if identity else f"arn:aws:sts::{LOCAL_ACCOUNT}:assumed-role/unknown/{denial.function}"
    )
    return _error(service, 403, "AccessDeniedException", _denied_message(principal, denial))


def _make_handler(endpoint: AwsEndpoint) -> type[FastHandler]:
    class AwsEndpointHandler(FastHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server dispatches on this name
            body = self.read_body(_MAX_BODY)
            response = endpoint.handle("POST", self.path, dict(self.headers.items()), body)
            if isinstance(response, RelayedStream):
                send_relayed(self, response)
                return
            keep = [(k, v) for k, v in response.headers if k.lower() not in ("content-length", "date", "connection")]
            self.send_bytes(response.status, keep, response.body)

        def do_GET(self) -> None:  # noqa: N802 - AppConfig's reads (GetLatestConfiguration, List*, GetDeployment)
            response = endpoint.handle("GET", self.path, dict(self.headers.items()), self.read_body(_MAX_BODY))
            assert isinstance(response, Response)  # only Invoke streams, and Invoke is a POST
            keep = [(k, v) for k, v in response.headers if k.lower() not in ("content-length", "date", "connection")]
            self.send_bytes(response.status, keep, response.body)

    return AwsEndpointHandler
