"""The OpenAPI 3.1 description served at /v1/openapi.json.

Built in code, next to the server, so a test can check that it lists every route the server has.
"""

from __future__ import annotations

from typing import Any

from alt_router import __version__

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}

_ROUTE = {
    "type": "object",
    "required": ["prefix", "peer", "next_hop"],
    "properties": {
        "prefix": {"type": "string", "examples": ["153.16.0.0/16"]},
        "peer": {"type": "string"},
        "peer_address": {"type": "string"},
        "next_hop": {"type": "string"},
        "next_hop_peer": {"type": "string"},
        "as_path": {"type": "array", "items": {"type": "integer"}},
        "as_set": {"type": "array", "items": {"type": "integer"}},
        "origin": {"type": "string"},
        "med": {"type": ["integer", "null"]},
        "communities": {"type": "array", "items": {"type": "string"}},
        "learned_at": {"type": "number"},
        "best": {"type": "boolean", "description": "only with peer=: whether this path is the Loc-RIB's"},
    },
}

_PEER = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "asn": {"type": "integer"},
        "addresses": {"type": "array", "items": {"type": "string"}},
        "state": {"type": "string", "enum": ["up", "down"]},
        "since": {"type": "number"},
        "uptime": {"type": ["number", "null"]},
        "router_id": {"type": ["string", "null"]},
        "last_down_reason": {"type": ["string", "null"]},
        "prefixes": {
            "type": "object",
            "properties": {
                "received": {"type": "integer"},
                "accepted": {"type": "integer"},
                "best": {"type": "integer"},
                "dropped": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
    },
}

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_AUTH_ERRORS = {"401": _error("missing or wrong bearer token")}


def _get(summary: str, response: dict[str, Any], errors: dict[str, Any] | None = None,
         **extra: Any) -> dict[str, Any]:
    responses = {"200": response, **(errors or {}), **_AUTH_ERRORS}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    op.update(extra)
    return {"get": op}


def document() -> dict[str, Any]:
    prefix_param = {"name": "prefix", "in": "path", "required": True, "schema": {"type": "string"},
                    "description": "an EID-prefix such as 153.16.0.0/16 (slash sent raw or as %2F)"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "alt_router monitoring API",
            "version": __version__,
            "description": "Read the state of a LISP+ALT node, follow its route and peer events, "
                           "announce or withdraw prefixes. See docs/api.md.",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error", "detail"],
                    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
                },
                "Route": _ROUTE,
                "Peer": _PEER,
            },
        },
        "paths": {
            "/v1/status": _get("Node identity, uptime and stream position", _json(_OBJECT)),
            "/v1/peers": _get("BGP peers: state, uptime, prefixes received/accepted/dropped by reason",
                              _json({"type": "object", "properties": {
                                  "peers": {"type": "array", "items": _ref("Peer")}}})),
            "/v1/tunnels": _get("GRE tunnels: mode and counters",
                                _json({"type": "object", "properties": {
                                    "tunnels": {"type": "array", "items": _OBJECT}}})),
            "/v1/routes": {
                "get": {
                    "summary": "Loc-RIB routes, or one peer's Adj-RIB-In, optionally filtered by prefix",
                    "parameters": [
                        {"name": "prefix", "in": "query", "schema": {"type": "string"}},
                        {"name": "match", "in": "query",
                         "schema": {"type": "string", "enum": ["exact", "longer", "shorter"],
                                    "default": "exact"},
                         "description": "longer: the prefix and more-specifics; shorter: the prefix and "
                                        "less-specifics covering it"},
                        {"name": "peer", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query",
                         "schema": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 1000}},
                    ],
                    "responses": {
                        "200": _json({"type": "object", "properties": {
                            "routes": {"type": "array", "items": _ref("Route")},
                            "count": {"type": "integer"}, "total": {"type": "integer"},
                            "truncated": {"type": "boolean"}}}),
                        "400": _error("bad prefix, match kind or limit"),
                        "404": _error("unknown peer"),
                        **_AUTH_ERRORS,
                    },
                },
                "post": {
                    "summary": "Announce an EID-prefix (idempotent)",
                    "security": _BEARER,
                    "requestBody": {"required": True, "content": {JSON: {"schema": {
                        "type": "object", "required": ["prefix"],
                        "properties": {"prefix": {"type": "string"}}}}}},
                    "responses": {
                        "201": _json(_OBJECT, "announced"),
                        "200": _json(_OBJECT, "already announced, nothing changed"),
                        "400": _error("bad body or prefix"),
                        "413": _error("body too large"),
                        "422": _error("the node refuses this prefix"),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/v1/routes/{prefix}": {
                "delete": {
                    "summary": "Withdraw an EID-prefix (idempotent)",
                    "security": _BEARER,
                    "parameters": [prefix_param],
                    "responses": {
                        "200": _json(_OBJECT, "changed tells whether it was announced"),
                        "400": _error("bad prefix"),
                        "422": _error("the node refuses this prefix"),
                        **_AUTH_ERRORS,
                    },
                },
            },
            "/v1/lookup/{eid}": _get(
                "The route and next hop a datagram to this EID would take",
                _json(_OBJECT),
                {"400": _error("not an IP address"), "404": _error("no route covers the EID")},
                parameters=[{"name": "eid", "in": "path", "required": True, "schema": {"type": "string"}}],
            ),
            "/v1/registrations": _get("Map-Server registrations",
                                      _json({"type": "object", "properties": {
                                          "registrations": {"type": "array", "items": _OBJECT}}})),
            "/v1/counters": _get("Every counter of the node, by component", _json(_OBJECT)),
            "/v1/stream": _get(
                "Server-Sent Events: route and peer changes; resume with Last-Event-ID or since=",
                {"description": "an endless text/event-stream",
                 "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                {"400": _error("bad since= or Last-Event-ID")},
                parameters=[
                    {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0},
                     "description": "send every kept event after this sequence number first"},
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                ],
            ),
            "/v1/openapi.json": _get("This document", _json(_OBJECT)),
            "/metrics": _get("Prometheus metrics",
                             {"description": "text exposition format",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}),
        },
    }
