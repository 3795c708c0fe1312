"""`flower-supernode` for the tests: Flower's own SuperNode, its idle poll shortened.

Flower 1.42's SuperNode asks the SuperLink for a message and, when there is none, sleeps a fixed 3 s
(flwr/supernode/start_client_internal.py), so every message of a test waits 1.5 s on average before
a node sees it. A restarted SuperLink lists a surviving node again only once its next heartbeat gets
through, and those come every ~20 s (retried with a backoff of up to 20 s after a failure): a resumed
run's join waited that long for a live node. The tests run this module instead of the `flower-supernode`
script: the same code, arguments and behaviour, with those sleeps cut to POLL_S and heartbeats every
~2.4 s (retries after at most HEARTBEAT_RETRY_MAX_S). Deployments and benchmarks/bench_flower.py run the
unmodified SuperNode.
"""

import sys
import time

from fedmkt.federation.flower_support import check_flower

check_flower()  # the internals patched below are those of the Flower range tested

import flwr.supercore.heartbeat as heartbeat  # noqa: E402
import flwr.supernode.start_client_internal as internal  # noqa: E402
from flwr.supercore.retry import exponential  # noqa: E402
from flwr.supernode.cli.flower_supernode import flower_supernode  # noqa: E402

POLL_S = 0.5
HEARTBEAT_RETRY_MAX_S = 1.0
HEARTBEAT_INTERVAL_S = 8


class _ShortSleeps:
    """`time` as the SuperNode's loop sees it: every sleep at most POLL_S."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, POLL_S))


if __name__ == "__main__":
    internal.time = _ShortSleeps()
    heartbeat.exponential = lambda max_delay=None, **kw: exponential(max_delay=HEARTBEAT_RETRY_MAX_S, **kw)
    heartbeat.HEARTBEAT_DEFAULT_INTERVAL = HEARTBEAT_INTERVAL_S  # the next beat: (this - 5 s call timeout) * ~0.8
    sys.argv[0] = "flower-supernode"
    sys.exit(flower_supernode())
