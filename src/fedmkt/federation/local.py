"""In-process FedMKT federation: the embedded default of `fedmkt run`.

The server coordinator is the one Flower runs; here its transport calls each client's runtime
directly. Requests, replies and packets still cross in their wire form (bytes and flat records), so
a local run exercises exactly what a deployment exchanges. The run folder is described in
`fedmkt.federation.store`.
"""

from __future__ import annotations

from pathlib import Path

from fedmkt.config import RunConfig
from fedmkt.data.questions import Question
from fedmkt.federation.client import ClientRuntime
from fedmkt.federation.coordinator import Coordinator
from fedmkt.federation.protocol import ClientFailure, Phase
from fedmkt.federation.roles import Party
from fedmkt.federation.setup import federated_split, make_client, make_server, seed_everything
from fedmkt.federation.store import RunStore
from fedmkt.models import BaseModels
from fedmkt.progress import SILENT, Reporter
from fedmkt.records import RoundRecord
from fedmkt.tracking import StepLog


class LocalTransport:
    """Calls each client's runtime in this process, one after another; errors drop the client."""

    def __init__(self, runtimes: dict[str, ClientRuntime]):
        self.runtimes = runtimes

    def call(self, phase: Phase, payloads: dict[str, dict]) -> dict:
        replies = {}
        for name, payload in payloads.items():
            try:
                replies[name] = self.runtimes[name].handle(phase, payload)
            except Exception as error:  # one client's failure must not end the round
                replies[name] = ClientFailure(f"{type(error).__name__}: {error}")
        return replies


class LocalFederation:
    """The server and every client in this process, with their adapters in one run folder."""

    def __init__(self, config: RunConfig, reporter: Reporter = SILENT, questions: list[Question] | None = None,
                 resume: bool = False, zero_shot_cache: Path | None = None, share_bases: bool = True):
        self.config = config
        self.reporter = reporter
        self.resume = resume
        seed_everything(config.seed)
        self.split = federated_split(config, questions)
        self.store = RunStore.open(config, resume, zero_shot_cache)
        reporter.message(f"loading models server={config.server.source} "
                         f"clients={[c.model.source for c in config.clients]}")
        # One frozen base per model in this process, each party with its own adapter on it (share_bases=False:
        # a copy each, as before; a test holds the two equal).
        bases = BaseModels() if share_bases else None
        self.server = make_server(config, self.split, reporter, bases)
        self.runtimes = {c.name: make_client(config, c.name, self.split, self.store.root, reporter, bases)
                         for c in config.clients}
        self.coordinator = Coordinator(config, self.server, self.split, LocalTransport(self.runtimes), self.store,
                                       reporter, clients_known=True)
        steps = StepLog(self.store.steps, config.tracking.report_to, self.store.root.name)
        for party in self.parties:
            party.progress.step_log = steps

    @property
    def run_dir(self) -> Path:
        return self.store.root

    @property
    def parties(self) -> list[Party]:
        return [self.server, *(r.party for r in self.runtimes.values())]

    def prepare(self) -> None:
        """Setup before round 1: vocabulary maps both ways (cached on disk), alignments, encodings."""
        self.coordinator.prepare()
        for runtime in self.runtimes.values():
            runtime.party.sender_alignment(self.server.tokenizer)

    def run_round(self, round_no: int) -> RoundRecord:
        return self.coordinator.run_round(round_no)

    def run(self) -> Path:
        try:
            self.prepare()
            metrics = self.coordinator.run(resume=self.resume)
            self.store.write_summary(metrics)
        finally:
            self.store.close()
        return self.store.root
