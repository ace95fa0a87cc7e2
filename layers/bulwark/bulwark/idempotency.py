"""Client Idempotency-Key support for the invoker (Powertools idempotency on DynamoDB).

A retried request with the same key (per caller) returns the first successful result instead of calling and billing
the model twice. The key is scoped to the caller, and bound to a hash of the canonical payload: reusing a key for a
different request is refused. A concurrent duplicate waits for nothing — it is refused while the first is in flight.
Failures are not stored, so a retry after an upstream error really retries.
"""

from __future__ import annotations

import hashlib
import threading
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
    """Built at cold start, set up on the first request that carries a key: Powertools' persistence layer needs
    boto3, which no other request of the invoker does (most requests carry no Idempotency-Key)."""

    def __init__(self, table_name: str, client: Callable[[], Any]) -> None:
        self._table_name = table_name
        self._client = client
        self._setup: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def _layer_and_config(self) -> tuple[Any, Any]:
        with self._lock:
            if self._setup is None:
                from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer, IdempotencyConfig

                layer = DynamoDBPersistenceLayer(table_name=self._table_name, boto3_client=self._client())
                config = IdempotencyConfig(
                    event_key_jmespath="[principal, idempotency_key]",
                    payload_validation_jmespath="payload_hash",
                    expires_after_seconds=IDEMPOTENCY_WINDOW_SECONDS,
                    raise_on_no_idempotency_key=True,
                )
                self._setup = (layer, config)
            return self._setup

    def run(self, principal: str, key: str, payload: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored result for (principal, key), or call() once and store it if it succeeded (`ok`)."""
        from aws_lambda_powertools.utilities.idempotency import idempotent_function
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyPersistenceLayerError,
            IdempotencyValidationError,
        )

        layer, config = self._layer_and_config()

        @idempotent_function(  # type: ignore[untyped-decorator]
            data_keyword_argument="record", persistence_store=layer, config=config
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
