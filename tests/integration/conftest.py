"""Integration fixtures: the session's DynamoDB Local (the real engine, fetched into a cache on first use; shared with
the process's stacks, which keep their tables in databases of their own), with tables made from template.yaml's own
definitions so tests cannot drift from what is deployed.

- ``dynamodb_local``: session-scoped; ``.endpoint_url``, ``.table_names`` (logical id -> name, the template's tables
  created once), ``.boto3_client()``, ``.wire_client()``, ``.create_tables(suffix)``.
- ``fresh_tables``: a new, uniquely named copy of every template table for one test (logical id -> name).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bulwark_dev.local.dynamodb_local import DynamoDBLocal, create_tables, local_dynamodb_client, local_wire_client
from bulwark_dev.local.template_model import TemplateModel, load_template

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class DynamoDBLocalFixture:
    endpoint_url: str
    table_names: dict[str, str]
    template: TemplateModel
    process: DynamoDBLocal

    def boto3_client(self) -> Any:
        return local_dynamodb_client(self.endpoint_url)

    def wire_client(self, read_timeout: float = 2.0) -> Any:
        """The lean client the deployed functions use (bulwark.aws.wire); `read_timeout` is each call's deadline."""
        return local_wire_client(self.endpoint_url, read_timeout=read_timeout)

    def create_tables(self, suffix: str) -> dict[str, str]:
        """Create every template table again as ``<name>-<suffix>``; returns logical id -> name."""
        names = {logical_id: f"{name}-{suffix}" for logical_id, name in self.template.table_names.items()}
        create_tables(self.boto3_client(), self.template.tables, names)
        return names


@pytest.fixture(scope="session")
def dynamodb_local(shared_dynamodb: DynamoDBLocal) -> DynamoDBLocalFixture:
    """The process's shared DynamoDB Local (tests/conftest.py), its default database holding the template's tables."""
    template = load_template(ROOT / "template.yaml")
    create_tables(local_dynamodb_client(shared_dynamodb.endpoint_url), template.tables, template.table_names)
    return DynamoDBLocalFixture(shared_dynamodb.endpoint_url, template.table_names, template, shared_dynamodb)


@pytest.fixture
def fresh_tables(dynamodb_local: DynamoDBLocalFixture) -> Iterator[dict[str, str]]:
    names = dynamodb_local.create_tables(uuid.uuid4().hex[:8])
    yield names
    client = dynamodb_local.boto3_client()
    for name in names.values():
        client.delete_table(TableName=name)
