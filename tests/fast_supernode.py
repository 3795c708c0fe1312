"""`flower-supernode` for the tests: Flower's own SuperNode, its idle poll shortened.

Flower 1.42's SuperNode asks the SuperLink for a message and, when there is none, sleeps a fixed 3 s
(flwr/supernode/start_client_internal.py), so every message of a test waits 1.5 s on average before
a node sees it. The tests run this module instead of the `flower-supernode` script: the same code,
arguments and behaviour, with those sleeps cut to POLL_S. Deployments and benchmarks/bench_flower.py
run the unmodified SuperNode.
"""

import sys
import time

import flwr.supernode.start_client_internal as internal
from flwr.supernode.cli.flower_supernode import flower_supernode

POLL_S = 0.5


class _ShortSleeps:
    """`time` as the SuperNode's loop sees it: every sleep at most POLL_S."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, POLL_S))


if __name__ == "__main__":
    internal.time = _ShortSleeps()
    sys.argv[0] = "flower-supernode"
    sys.exit(flower_supernode())
