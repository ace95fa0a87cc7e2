"""The caller context: the one contract between the authorizer and the validator.

The authorizer writes it into API Gateway's authorizer context (`to_context()`: flat strings, as a REST API hands them
to the integration); the validator reads it back (`CallerContext.model_validate(requestContext.authorizer)`). A
refusal travels as a typed error (class name, code, message, Retry-After), rebuilt by `refusal_error()` from the one
error tree, never as a string mapped back by a table. Never a credential.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, field_validator

from bulwark.api.events import ApiGatewayModel
from bulwark.errors import ERROR_CLASSES, BulwarkError, PermissionDenied

# What API Gateway's ACCESS_DENIED gateway response shows when an Allow does not cover the called method ARN: the only
# such case is an invoke of a model the role may not use (template.yaml renders these two keys).
_DENIED_CODE = PermissionDenied.default_code
_DENIED_MESSAGE = PermissionDenied.default_message


class CallerContext(ApiGatewayModel):
    """Who is calling (or which refusal they get), as the authorizer decided it."""

    principalId: str = ""  # noqa: N815 - added by API Gateway from the authorizer's principalId
    principal: str = ""
    kind: str = Field(default="", description='"api_key", "jwt", or "" for a refusal without an identity')
    key_id: str = ""
    subject: str = ""
    tenant: str = ""
    role: str = ""
    expires_at: int | None = None
    limit_overrides: dict[str, int] = Field(default_factory=dict, description="Per-key limit overrides")
    risk_score: int = 0
    risk_action: str = "allow"
    risk_reasons: str = ""
    refusal: str = Field(default="", description="The refusal's code; empty for an allowed caller")
    refusal_class: str = ""
    refusal_message: str = ""
    refusal_retry_after: int = 0
    denied_code: str = _DENIED_CODE
    denied_message: str = _DENIED_MESSAGE

    @field_validator("expires_at", mode="before")
    @classmethod
    def _optional_int(cls, v: Any) -> Any:
        return None if v in ("", None) else v

    @field_validator("risk_score", "refusal_retry_after", mode="before")
    @classmethod
    def _int_or_zero(cls, v: Any) -> Any:
        return 0 if v in ("", None) else v

    @field_validator("limit_overrides", mode="before")
    @classmethod
    def _json_object(cls, v: Any) -> Any:
        if v in ("", None):
            return {}
        return json.loads(v) if isinstance(v, str) else v

    @classmethod
    def refused(cls, principal: str, error: BulwarkError, **fields: Any) -> CallerContext:
        """A refusal as the context carries it; the denied_* keys show it in a gateway response too."""
        return cls(
            principal=principal,
            refusal=error.code,
            refusal_class=type(error).__name__,
            refusal_message=error.message,
            refusal_retry_after=int(getattr(error, "retry_after", 0)),
            denied_code=error.code,
            denied_message=error.message,
            **fields,
        )

    def refusal_error(self) -> BulwarkError | None:
        """The refusal as the error the client gets, or None for an allowed caller. Unknown class: fail closed."""
        if not self.refusal:
            return None
        cls = ERROR_CLASSES.get(self.refusal_class)
        if cls is None:
            return PermissionDenied(code="access_denied")
        kwargs: dict[str, Any] = {"code": self.refusal}
        if cls.status in (429, 503):
            kwargs["retry_after"] = max(1, self.refusal_retry_after)
        return cls(self.refusal_message or None, **kwargs)

    def to_context(self) -> dict[str, str]:
        """Flat strings for API Gateway's authorizer context (it allows no nesting)."""
        data = self.model_dump(exclude={"principalId"})
        out: dict[str, str] = {}
        for name, value in data.items():
            if value is None:
                out[name] = ""
            elif isinstance(value, dict):
                out[name] = json.dumps(value, separators=(",", ":")) if value else ""
            else:
                out[name] = str(value)
        return out
