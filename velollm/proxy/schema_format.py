"""A JSON schema answer format (Ollama's `format: {...}`) sent to an OpenAI-compatible upstream: as OpenAI's
`response_format: {"type": "json_schema", ...}`, or, to a server that refuses that type, in the form
llama-cpp-python's server takes, `{"type": "json_object", "schema": {...}}`.

llama-cpp-python's server validates response_format.type against "text" / "json_object" only and answers
json_schema with a 500 that names both; the request is then sent again in its form (nothing was generated),
and the upstream is remembered to want it, so that later requests go in that form at once.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from velollm.proxy.upstream import Upstream

logger = logging.getLogger(__name__)

_REFUSAL_STATUSES = (400, 422, 500)  # llama-cpp-python: 500; a stricter server's validation: 400 / 422


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's response_format for answers that follow `schema`."""
    return {"type": "json_schema", "json_schema": {"name": "format", "schema": schema}}


async def send_with_schema(upstream: Upstream, path: str, body: dict[str, Any]) -> httpx.Response:
    """POST `body` to the upstream; a json_schema response_format it refuses goes again as json_object + schema.
    Any other answer (an error too) is returned as it came."""
    schema = _schema_of(body.get("response_format"))
    if schema is not None and upstream.wants_json_object_schema:
        return await upstream.send("POST", path, json_body=_as_json_object(body, schema))
    response = await upstream.send("POST", path, json_body=body)
    if schema is None or response.status_code not in _REFUSAL_STATUSES:
        return response
    data = await upstream.read_body(response)
    if not _refuses_json_schema(data):
        return httpx.Response(response.status_code, headers=response.headers, content=data)
    logger.info("upstream %s refuses response_format json_schema: sending json_object with the schema, as "
                "llama-cpp-python's server takes it", upstream.url)
    upstream.wants_json_object_schema = True
    return await upstream.send("POST", path, json_body=_as_json_object(body, schema))


def _schema_of(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


def _as_json_object(body: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    return {**body, "response_format": {"type": "json_object", "schema": schema}}


def _refuses_json_schema(data: bytes) -> bool:
    """Whether an error body is the upstream refusing the json_schema type of response_format (its validation
    error names both), not any other failure (which is passed on as it is)."""
    text = data.decode("utf-8", "replace")
    return "json_schema" in text and "response_format" in text
