"""alt_router: a LISP+ALT router (RFC 6836) with ExaBGP over GRE."""

__version__ = "0.1.0"
