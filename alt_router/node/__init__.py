"""An ALT node: its configuration, the decision core, and the daemon that wires the parts together."""
