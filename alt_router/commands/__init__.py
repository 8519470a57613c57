"""Sub-commands of ``alt-router``.

Every module in this package that defines ``register(subparsers)`` becomes a
sub-command; ``register`` adds its parser and sets ``func`` to a callable that
takes the parsed arguments and returns the exit status.
"""
