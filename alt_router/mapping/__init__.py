"""The LISP mapping system's roles on an ALT node: Map-Resolver, Map-Server, ETR, and the lig client.

Each role is a sans-IO state object whose methods take bytes (or a decoded
message), the peer's address and port, and the clock, and return a list of
``alt_router.mapping.actions`` for the edge to carry out.  See docs/mapping.md.
"""
