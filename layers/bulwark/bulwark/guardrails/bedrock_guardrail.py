"""Optional Amazon Bedrock Guardrails check (`ApplyGuardrail`), used when the policy names a guardrail id.

The bedrock-runtime client is created once per container by the caller and injected, so tests point it at a local
server speaking the same REST protocol. Failures fail closed: a guardrail that cannot be asked is a refusal.
"""

from __future__ import annotations

from typing import Any, Literal

from bulwark.errors import ServiceUnavailable

Source = Literal["INPUT", "OUTPUT"]


class BedrockGuardrail:
    def __init__(self, client: Any, guardrail_id: str, version: str = "DRAFT") -> None:
        self._client = client
        self.guardrail_id = guardrail_id
        self.version = version

    def check(self, texts: list[str], source: Source = "INPUT") -> tuple[bool, tuple[str, ...]]:
        """(blocked, reasons): reasons name the policies that intervened (e.g. "contentPolicy:PROMPT_ATTACK")."""
        content = [{"text": {"text": t}} for t in texts if t]
        if not content:
            return False, ()
        try:
            resp = self._client.apply_guardrail(
                guardrailIdentifier=self.guardrail_id, guardrailVersion=self.version, source=source, content=content
            )
        except Exception as exc:
            raise ServiceUnavailable(
                "The content guardrail could not be checked right now. Retry later.", code="guardrail_unavailable"
            ) from exc
        if resp.get("action") != "GUARDRAIL_INTERVENED":
            return False, ()
        return True, tuple(sorted(_reasons(resp.get("assessments") or [])))


def _reasons(assessments: list[dict[str, Any]]) -> set[str]:
    out: set[str] = set()
    for a in assessments:
        for f in (a.get("contentPolicy") or {}).get("filters", []):
            if f.get("action") == "BLOCKED":
                out.add(f"contentPolicy:{f.get('type', 'UNKNOWN')}")
        for t in (a.get("topicPolicy") or {}).get("topics", []):
            if t.get("action") == "BLOCKED":
                out.add("topicPolicy")
        for w in (a.get("wordPolicy") or {}).get("customWords", []) + (a.get("wordPolicy") or {}).get(
            "managedWordLists", []
        ):
            if w.get("action") == "BLOCKED":
                out.add("wordPolicy")
        sip = a.get("sensitiveInformationPolicy") or {}
        for e in sip.get("piiEntities", []) + sip.get("regexes", []):
            if e.get("action") == "BLOCKED":
                out.add("sensitiveInformationPolicy")
        for c in (a.get("contextualGroundingPolicy") or {}).get("filters", []):
            if c.get("action") == "BLOCKED":
                out.add("contextualGroundingPolicy")
    return out or {"guardrail_intervened"}
