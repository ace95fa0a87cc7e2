"""Small helpers shared by the table modules: attribute (de)serialization and SDK error wrapping."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from bulwark.aws.wire import AwsError, AwsServiceError
from bulwark.errors import StoreUnavailable


class ConditionFailed(Exception):
    """A conditional write was refused; `item` is the item as it was (when DynamoDB returned it)."""

    def __init__(self, item: dict[str, Any] | None) -> None:
        super().__init__("condition failed")
        self.item = item


def to_attr(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float | Decimal):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, list | tuple):
        return {"L": [to_attr(v) for v in value]}
    if isinstance(value, dict):
        return {"M": {k: to_attr(v) for k, v in value.items()}}
    raise TypeError(f"cannot store {type(value).__name__}")


def from_attr(attr: dict[str, Any]) -> Any:
    ((kind, value),) = attr.items()
    if kind == "S":
        return value
    if kind == "N":
        d = Decimal(value)
        return int(d) if d == d.to_integral_value() else float(d)
    if kind == "BOOL":
        return bool(value)
    if kind == "NULL":
        return None
    if kind == "L":
        return [from_attr(v) for v in value]
    if kind == "M":
        return {k: from_attr(v) for k, v in value.items()}
    if kind == "SS":
        return list(value)
    if kind == "NS":
        return [int(Decimal(v)) for v in value]
    raise TypeError(f"unsupported attribute type {kind}")


def to_item(data: dict[str, Any]) -> dict[str, Any]:
    return {k: to_attr(v) for k, v in data.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: from_attr(v) for k, v in item.items()}


@contextmanager
def store_call() -> Iterator[None]:
    """Map client/transport failures to StoreUnavailable (fail closed); conditional failures to ConditionFailed.

    The functions use the lean client (bulwark.aws.wire); the CLI may hand in a boto3 client, whose errors are
    recognised without importing botocore where it is not already loaded.
    """
    try:
        yield
    except AwsServiceError as exc:
        raise _mapped(exc.code, exc.body.get("Item")) from exc
    except AwsError as exc:
        raise StoreUnavailable() from exc
    except Exception as exc:
        sdk = sys.modules.get("botocore.exceptions")
        if sdk is None or not isinstance(exc, sdk.ClientError | sdk.BotoCoreError):
            raise
        if isinstance(exc, sdk.ClientError):
            raise _mapped(exc.response.get("Error", {}).get("Code", ""), exc.response.get("Item")) from exc
        raise StoreUnavailable() from exc


def _mapped(code: str, item: Any) -> Exception:
    if code == "ConditionalCheckFailedException":
        return ConditionFailed(from_item(item) if isinstance(item, dict) and item else None)
    return StoreUnavailable()
