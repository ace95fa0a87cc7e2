"""Client Idempotency-Key support for the invoker (Powertools idempotency on DynamoDB).

A retried request with the same key (per caller) returns the first successful result instead of calling and billing
the model twice. The key is scoped to the caller, and bound to a hash of the canonical payload: reusing a key for a
different request is refused. A concurrent duplicate waits for nothing — it is refused while the first is in flight.
Failures are not stored, so a retry after an upstream error really retries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from bulwark.errors import IdempotencyConflict, InvalidRequest, StoreUnavailable

IDEMPOTENCY_WINDOW_SECONDS = 3600


class _NotStored(Exception):
    """Carries a failed result out of the idempotent function, so Powertools deletes its in-progress record."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("not stored")
        self.result = result


class Idempotency:
    def __init__(self, table_name: str, client: Any) -> None:
        from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

        self._layer = DynamoDBPersistenceLayer(table_name=table_name, boto3_client=client)
        self._config = IdempotencyConfig(
            event_key_jmespath="[principal, idempotency_key]",
            payload_validation_jmespath="payload_hash",
            expires_after_seconds=IDEMPOTENCY_WINDOW_SECONDS,
            raise_on_no_idempotency_key=True,
        )

    def run(self, principal: str, key: str, payload: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored result for (principal, key), or call() once and store it if it succeeded (`ok`)."""
        from aws_lambda_powertools.utilities.idempotency import idempotent_function
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyPersistenceLayerError,
            IdempotencyValidationError,
        )

        @idempotent_function(  # type: ignore[untyped-decorator]
            data_keyword_argument="record", persistence_store=self._layer, config=self._config
        )
        def once(record: dict[str, str]) -> dict[str, Any]:
            result = call()
            if not result.get("ok"):
                raise _NotStored(result)
            return result

        record = {
            "principal": principal,
            "idempotency_key": key,
            "payload_hash": hashlib.sha256(payload.encode("utf-8")).hexdigest(),
        }
        try:
            stored: dict[str, Any] = once(record=record)
            return stored
        except _NotStored as failed:
            return failed.result
        except IdempotencyAlreadyInProgressError:
            raise IdempotencyConflict() from None
        except IdempotencyValidationError:
            raise InvalidRequest(
                "This Idempotency-Key was already used for a different request.",
                code="idempotency_key_reused",
                param="Idempotency-Key",
            ) from None
        except IdempotencyPersistenceLayerError as exc:
            raise StoreUnavailable() from exc
