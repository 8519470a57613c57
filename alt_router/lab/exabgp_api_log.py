"""ExaBGP API process for labs: append every line ExaBGP writes to us to a file, flushed at once.

Run by ExaBGP as ``python -m alt_router.lab.exabgp_api_log FILE``; tests read FILE
to see sessions change state and routes arrive.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m alt_router.lab.exabgp_api_log FILE\n")
        return 2
    with open(argv[1], "a", buffering=1) as out:
        # readline() rather than iteration: the file iterator reads ahead and
        # would hold lines back until a block fills.
        while line := sys.stdin.readline():
            out.write(line if line.endswith("\n") else line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
