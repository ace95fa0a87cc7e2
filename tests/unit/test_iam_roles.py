"""Roles read from a template for the local IAM enforcement: SAM policy templates expanded as SAM does, ARNs resolved
for the local account and region, and a role edit seen at the next call."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from bulwark_dev.local.iam_policy import evaluate
from bulwark_dev.local.iam_roles import RoleBook, load_roles
from bulwark_dev.local.template_model import TemplateError, parse_template_text

TABLE_ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/bulwark-local-Table"
TEMPLATE = """
    Transform: AWS::Serverless-2016-10-31
    Resources:
      Table:
        Type: AWS::DynamoDB::Table
        Properties:
          KeySchema: [{AttributeName: pk, KeyType: HASH}]
      Reader:
        Type: AWS::Serverless::Function
        Properties:
          CodeUri: functions/reader/
          Handler: app.handler
          Policies:
            - DynamoDBReadPolicy:
                TableName: !Ref Table
      Writer:
        Type: AWS::Serverless::Function
        Properties:
          CodeUri: functions/writer/
          Handler: app.handler
          Role: !GetAtt WriterRole.Arn
      WriterRole:
        Type: AWS::IAM::Role
        Properties:
          AssumeRolePolicyDocument: {}
          Policies:
            - PolicyName: writer
              PolicyDocument:
                Statement:
                  - Sid: Write
                    Effect: Allow
                    Action: dynamodb:PutItem
                    Resource: !GetAtt Table.Arn
"""


def _write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_a_sam_policy_template_is_expanded_as_sam_does(tmp_path: Path) -> None:
    _write(tmp_path / "template.yaml", TEMPLATE)
    reader = load_roles(tmp_path / "template.yaml").functions["Reader"]
    assert evaluate(reader.statements, "dynamodb:GetItem", TABLE_ARN).allowed
    assert evaluate(reader.statements, "dynamodb:Query", f"{TABLE_ARN}/index/by-x").allowed
    assert not evaluate(reader.statements, "dynamodb:PutItem", TABLE_ARN).allowed
    # SAM's generated role also carries the basic execution policy.
    assert evaluate(reader.statements, "logs:PutLogEvents", "arn:aws:logs:us-east-1:000000000000:log-group:x").allowed


def test_an_explicit_role_is_resolved_for_the_local_account(tmp_path: Path) -> None:
    _write(tmp_path / "template.yaml", TEMPLATE)
    writer = load_roles(tmp_path / "template.yaml").functions["Writer"]
    assert writer.role_arn == "arn:aws:iam::000000000000:role/bulwark-local-WriterRole"
    assert [s.name for s in writer.statements] == ["WriterRole/writer/Write"]
    assert evaluate(writer.statements, "dynamodb:PutItem", TABLE_ARN).allowed


def test_a_managed_policy_cannot_be_evaluated_locally_and_says_so(tmp_path: Path) -> None:
    _write(
        tmp_path / "template.yaml",
        TEMPLATE.replace("- DynamoDBReadPolicy:", "- AmazonS3ReadOnlyAccess\n            - X:"),
    )
    with pytest.raises(TemplateError):
        load_roles(tmp_path / "template.yaml")


def test_an_edit_of_the_template_is_seen_at_the_next_call_and_a_broken_one_allows_nothing(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    _write(path, TEMPLATE)
    book = RoleBook(path)
    assert evaluate(book.current().functions["Writer"].statements, "dynamodb:PutItem", TABLE_ARN).allowed
    before = path.stat().st_mtime_ns
    _write(path, TEMPLATE.replace("dynamodb:PutItem", "dynamodb:DeleteItem"))
    os.utime(path, ns=(before + 1_000_000, before + 1_000_000))
    assert not evaluate(book.current().functions["Writer"].statements, "dynamodb:PutItem", TABLE_ARN).allowed
    _write(path, TEMPLATE.replace("Resource: !GetAtt Table.Arn", "Resource: !GetAtt Missing.Arn"))
    os.utime(path, ns=(before + 2_000_000, before + 2_000_000))
    with pytest.raises(TemplateError):
        book.current()
    with pytest.raises(TemplateError):  # never the last good roles
        book.current()


def test_a_variant_is_read_as_the_book_reads_its_file_and_leaves_the_book_alone(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    _write(path, TEMPLATE)
    book = RoleBook(path)
    edited = textwrap.dedent(TEMPLATE).replace("dynamodb:PutItem", "dynamodb:DeleteItem")
    variant = book.variant(parse_template_text(edited))
    assert not evaluate(variant.functions["Writer"].statements, "dynamodb:PutItem", TABLE_ARN).allowed
    assert evaluate(variant.functions["Writer"].statements, "dynamodb:DeleteItem", TABLE_ARN).allowed
    assert evaluate(book.current().functions["Writer"].statements, "dynamodb:PutItem", TABLE_ARN).allowed
    assert book.reloads == 1
