"""The public routes and their API Gateway method/resource pairs (shared by the authorizer and the validator)."""

from __future__ import annotations

from bulwark.policy import Route

ROUTE_METHODS: dict[Route, tuple[str, str]] = {
    "chat": ("POST", "v1/chat/completions"),
    "models": ("GET", "v1/models"),
    "invoke": ("POST", "v1/models/{model}/invoke"),
}


def route_of(method: str, resource: str) -> Route | None:
    for route, (m, path) in ROUTE_METHODS.items():
        if m == method.upper() and resource.lstrip("/") == path:
            return route
    return None
