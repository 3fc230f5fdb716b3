"""The OpenAPI document made exact where FastAPI's own leaves it loose, once, when it is
first asked for: what a generated client (openapi-python-client, tested in CI) needs.

- An optional body is the model itself, not "the model or null" (a client leaving it
  out sends nothing, rather than a JSON null it cannot serialise).
- `Escrowflow-Actor` is required on every mutation (the API refuses one without it,
  `actor_required`; FastAPI cannot say so and keep that code).
- The headers an answer carries: `X-Request-Id` on every one; `ETag` and
  `Idempotent-Replayed` on a transition's.
- Each error status lists the codes it answers with (`escrowflow.error_catalog`).
- Each enum of the vocabulary (entities, collections, states, events, roles,
  currencies, ledger kinds) is one named schema, referenced wherever it is used, so a
  generated client has one `Currency` class rather than one per field.
"""

from __future__ import annotations

from typing import Any

from escrowflow.error_catalog import CODES
from escrowflow.vocabulary import ENUMS

MUTATIONS = ("post", "put", "patch", "delete")
REQUEST_ID = {
    "description": "This request's id (the one sent, if any): in error bodies and logs too.",
    "schema": {"type": "string"},
}
TRANSITION_HEADERS = {
    "ETag": {
        "description": 'The entity\'s version, e.g. "v4": send it as If-Match.',
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "true when this answers a retry with an earlier Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
}


def finish(document: dict[str, Any]) -> dict[str, Any]:
    """`document` (FastAPI's), made exact in place; returned."""
    for operations in document.get("paths", {}).values():
        for method, operation in operations.items():
            _body(operation)
            if method in MUTATIONS:
                _actor_required(operation)
            _headers(operation)
            _error_codes(operation)
    _named_enums(document)
    return document


def _named_enums(document: dict[str, Any]) -> None:
    by_values = {frozenset(values): name for name, (values, _) in ENUMS.items()}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        name = by_values.get(frozenset(node.get("enum", ()))) if "enum" in node else None
        if name is not None:
            extra = {k: v for k, v in node.items() if k not in ("type", "enum", "title")}
            if extra.get("description") == ENUMS[name][1]:
                del extra["description"]
            return {"$ref": f"#/components/schemas/{name}", **extra}
        return {key: walk(value) for key, value in node.items()}

    document["paths"] = walk(document.get("paths", {}))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(walk(schemas))
    for name, (values, description) in ENUMS.items():
        schemas[name] = {"type": "string", "enum": values, "title": name,
                         "description": description}  # fmt: skip


def _body(operation: dict[str, Any]) -> None:
    body = operation.get("requestBody")
    if body is None:
        return
    for content in body.get("content", {}).values():
        schema = content.get("schema", {})
        choices = schema.get("anyOf", [])
        if len(choices) == 2 and {"type": "null"} in choices:
            (content["schema"],) = [c for c in choices if c != {"type": "null"}]


def _actor_required(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "header" and parameter["name"] == "Escrowflow-Actor":
            parameter["required"] = True
            parameter["schema"] = {"type": "string", "maxLength": 140}


def _headers(operation: dict[str, Any]) -> None:
    for status, response in operation.get("responses", {}).items():
        headers = response.setdefault("headers", {})
        headers["X-Request-Id"] = REQUEST_ID
        schema = response.get("content", {}).get("application/json", {}).get("schema", {})
        if status.startswith("2") and schema.get("$ref", "").endswith("/TransitionOut"):
            headers.update(TRANSITION_HEADERS)


def _error_codes(operation: dict[str, Any]) -> None:
    for status, response in operation.get("responses", {}).items():
        codes = CODES.get(int(status)) if status.isdigit() else None
        if codes and "codes:" not in response.get("description", ""):
            response["description"] = f"{response['description']}; codes: {', '.join(codes)}"
