"""An ALT node: its configuration (and, later, the daemon that wires it up)."""
