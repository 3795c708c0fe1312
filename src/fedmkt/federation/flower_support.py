"""Which Flower fedmkt is tested with, and which of Flower's internals it leans on (and why).

The ServerApp and ClientApp (flower_server.py, flower_client.py) use Flower's public Message API only. Two places go below it,
and a Flower release may change what they use without notice, so they refuse an untested Flower at
start-up (`check_flower`) instead of failing half way through a run:
"""

from __future__ import annotations

import os

TESTED = ">=1.42,<1.43"  # pyproject.toml pins the same range
ALLOW_ENV = "FEDMKT_ALLOW_UNTESTED_FLOWER"  # "1": start anyway, at the user's risk

INTERNALS = {
    "flwr.supernode.runtime.run_clientapp (pull_task_input, push_message, push_task_output)":
        "resident.py runs a SuperNode's ClientApp tasks in one process with the task functions flwr-clientapp uses",
    "flwr.supercore (RuntimeHttpClient, interceptors, heartbeat, retry, tls, TaskType, log)":
        "resident.py talks to the SuperNode's Runtime API as Flower's own SuperExec does",
    "flwr.proto.runtime_pb2.AcquireTaskRequest":
        "resident.py acquires each ClientApp task with the SuperExec's call",
    "flwr.cli.install.install_from_fab, flwr.clientapp.utils.get_load_client_app_fn":
        "resident.py loads the FAB's ClientApp once per FAB, so a client keeps its model between messages",
    "flwr.supernode.start_client_internal.time, flwr.supercore.heartbeat (tests only)":
        "tests/fast_supernode.py shortens the SuperNode's 3 s idle poll and its heartbeat interval",
}
__doc__ += "".join(f"\n- {name}: {why}" for name, why in INTERNALS.items()) + "\n"


class UntestedFlower(RuntimeError):
    """The installed Flower is outside the range fedmkt is tested with."""


def check_flower(version: str | None = None) -> str:
    """The installed Flower's version, if fedmkt is tested with it; else UntestedFlower naming the internals
    at stake (FEDMKT_ALLOW_UNTESTED_FLOWER=1 lets it start anyway)."""
    from packaging.specifiers import SpecifierSet

    if version is None:
        import flwr

        version = flwr.__version__
    if version in SpecifierSet(TESTED, prereleases=True) or os.environ.get(ALLOW_ENV) == "1":
        return version
    used = "".join(f"\n  - {name}: {why}" for name, why in INTERNALS.items())
    raise UntestedFlower(f"Flower {version} is installed, but fedmkt is tested with flwr{TESTED}. Its resident "
                         f"executor uses these Flower internals, which change between releases:{used}\n"
                         f"Install the tested Flower (pip install 'flwr[simulation]{TESTED}', as "
                         f"scripts/install.sh does), or set {ALLOW_ENV}=1 to start anyway.")
