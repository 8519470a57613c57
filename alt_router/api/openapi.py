"""The OpenAPI 3.1 description served at /v1/openapi.json.

Built in code, next to the server, so a test can check that it lists every route the server has.
"""

from __future__ import annotations

from typing import Any

from alt_router import __version__
from alt_router.api.query import (
    DEFAULT_LIMIT,
    DEFAULT_REGISTRATIONS_LIMIT,
    MAX_LIMIT,
    MAX_REGISTRATIONS_LIMIT,
)

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
        "atomic_aggregate": {"type": "boolean", "description": "ATOMIC_AGGREGATE (RFC 4271 §5.1.6)"},
        "aggregator": {"type": ["string", "null"], "description": "AGGREGATOR as ASN:router-id"},
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
_BUSY = {"503": _error("too many connections (see [api] max_connections); retry later")}
_CURSOR = {"name": "cursor", "in": "query", "schema": {"type": "string"},
           "description": "the next_cursor of the previous page, unchanged (opaque)"}
_NEXT_CURSOR = {"type": ["string", "null"],
                "description": "pass as cursor= for the next page; null on the last"}


def _limit(default: int, most: int) -> dict[str, Any]:
    return {"name": "limit", "in": "query", "description": "page size",
            "schema": {"type": "integer", "minimum": 1, "maximum": most, "default": default}}


def _get(summary: str, response: dict[str, Any], errors: dict[str, Any] | None = None,
         **extra: Any) -> dict[str, Any]:
    responses = {"200": response, **_AUTH_ERRORS, **_BUSY, **(errors or {})}
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
            "/v1/status": _get("Node identity, uptime, totals (never lists), API and stream counters",
                               _json(_OBJECT)),
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
                        _limit(DEFAULT_LIMIT, MAX_LIMIT),
                        _CURSOR,
                    ],
                    "responses": {
                        "200": _json({"type": "object", "properties": {
                            "routes": {"type": "array", "items": _ref("Route")},
                            "count": {"type": "integer", "description": "routes in this page"},
                            "total": {"type": "integer", "description": "routes in all pages"},
                            "truncated": {"type": "boolean", "description": "more pages follow"},
                            "next_cursor": _NEXT_CURSOR}}),
                        "400": _error("bad prefix, match kind, limit or cursor"),
                        "404": _error("unknown peer"),
                        **_AUTH_ERRORS,
                        **_BUSY,
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
                        "408": _error("the body did not arrive in time"),
                        "413": _error("body too large (also instead of 100 Continue)"),
                        "417": _error("an Expect other than 100-continue"),
                        "422": _error("the node refuses this prefix"),
                        **_AUTH_ERRORS,
                        **_BUSY,
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
                        **_BUSY,
                    },
                },
            },
            "/v1/lookup/{eid}": _get(
                "The route and next hop a datagram to this EID would take",
                _json(_OBJECT),
                {"400": _error("not an IP address"), "404": _error("no route covers the EID")},
                parameters=[{"name": "eid", "in": "path", "required": True, "schema": {"type": "string"}}],
            ),
            "/v1/registrations": _get(
                "Map-Server registrations, a page at a time",
                _json({"type": "object", "properties": {
                    "registrations": {"type": "array", "items": _OBJECT},
                    "count": {"type": "integer"}, "total": {"type": "integer"},
                    "next_cursor": _NEXT_CURSOR}}),
                {"400": _error("bad limit or cursor, unknown parameter")},
                parameters=[_limit(DEFAULT_REGISTRATIONS_LIMIT, MAX_REGISTRATIONS_LIMIT), _CURSOR],
            ),
            "/v1/aggregates": _get(
                "Configured EID-prefix aggregates: active or not, attributes, what they suppress",
                _json({"type": "object", "properties": {
                    "aggregates": {"type": "array", "items": {"type": "object", "properties": {
                        "prefix": {"type": "string"}, "active": {"type": "boolean"},
                        "summary_only": {"type": "boolean"}, "as_set": {"type": "boolean"},
                        "always": {"type": "boolean"}, "contributors": {"type": "integer"},
                        "suppressed": {"type": "integer"},
                        "suppressed_sample": {"type": "array", "items": {"type": "string"}},
                        "origin": {"type": ["string", "null"]},
                        "as_set_members": {"type": "array", "items": {"type": "integer"}},
                        "atomic_aggregate": {"type": ["boolean", "null"]}}}},
                    "count": {"type": "integer"}, "active": {"type": "integer"}}})),
            "/v1/counters": _get(
                "Every counter of the node, by component; drops under dropped, by reason",
                _json({"type": "object", "additionalProperties": {
                    "type": "object", "additionalProperties": {
                        "oneOf": [{"type": "integer"},
                                  {"type": "object", "additionalProperties": {"type": "integer"}}]}}})),
            "/v1/stream": _get(
                "Server-Sent Events: route, peer and aggregate changes; resume with Last-Event-ID or since=",
                {"description": "an endless text/event-stream",
                 "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                {"400": _error("bad since= or Last-Event-ID"),
                 "503": _error("too many stream clients (see [api] stream_clients) or connections")},
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
