"""The network-namespace lab: topologies in TOML built into namespaces, veths and bridges.

Typical use::

    with Lab(Topology.from_toml(path)) as lab:
        lab.exec("a", ["ping", "-c1", "10.0.1.2"])
        proc = lab.spawn("b", ["alt-router", "tunnel", ...], name="tunnel")

See docs/lab.md for the topology format and the clean-up rules.
"""

from alt_router.lab.json_match import json_mismatch, json_subset, ordered_list
from alt_router.lab.lab import Lab, teardown_all
from alt_router.lab.netns import NetnsError, remove_lab
from alt_router.lab.processes import CommandError, LabError, LabTimeoutError, ProcessHandle, wait_until
from alt_router.lab.topology import Endpoint, Host, Link, Process, Route, Segment, Topology, TopologyError

__all__ = [
    "CommandError",
    "Endpoint",
    "Host",
    "Lab",
    "LabError",
    "LabTimeoutError",
    "Link",
    "NetnsError",
    "Process",
    "ProcessHandle",
    "Route",
    "Segment",
    "Topology",
    "TopologyError",
    "json_mismatch",
    "json_subset",
    "ordered_list",
    "remove_lab",
    "teardown_all",
    "wait_until",
]
