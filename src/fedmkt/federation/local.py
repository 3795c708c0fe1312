"""In-process FedMKT federation: the embedded default of `fedmkt run`.

The server coordinator is the one Flower runs; here its transport calls each client's runtime
directly. Packets still cross as bytes (the validated wire form), so a local run exercises exactly
what a deployment exchanges. The run folder holds the resolved config, metrics.json (rewritten
after every round), each round's LoRA adapters (round-N/<party>/), a checkpoint and summary.md.
"""

from __future__ import annotations

import os
import random
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from fedmkt.config import RunConfig
from fedmkt.data.bigbench import load_bigbench
from fedmkt.data.mmlu import load_mmlu
from fedmkt.data.questions import Question
from fedmkt.data.splits import FederatedSplit, split_questions
from fedmkt.federation.coordinator import Coordinator
from fedmkt.federation.protocol import ClientFailure, ClientRuntime
from fedmkt.federation.roles import ClientParty, Party
from fedmkt.models import load_model
from fedmkt.training import make_progress


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_questions(config: RunConfig) -> list[Question]:
    questions = load_mmlu()
    if config.data.bigbench_tasks:
        questions += load_bigbench(config.data.bigbench_tasks)
    return questions


def federated_split(config: RunConfig, questions=None) -> FederatedSplit:
    """The same split on every party: it depends only on the config and its seed."""
    return split_questions(questions if questions is not None else load_questions(config),
                           {c.name: c.domains for c in config.clients}, config.data.public_size,
                           config.data.private_size, config.data.eval_size, config.data.eval_domains, config.seed)


def make_server(config: RunConfig, split: FederatedSplit, progress=None) -> Party:
    return Party("server", load_model(config.server, seed=config.seed), lora=config.lora, train=config.train,
                  fedmkt=config.fedmkt, public=split.public, seed=config.seed, progress=progress,
                  eval_scoring=config.data.eval_scoring)


def make_client(config: RunConfig, name: str, split: FederatedSplit, store: Path | None, progress=None) -> ClientRuntime:
    index = [c.name for c in config.clients].index(name)
    spec = config.clients[index]
    seed = config.seed + 1 + index
    party = ClientParty(name, load_model(spec.model, seed=seed), lora=config.lora, train=config.train,
                        fedmkt=config.fedmkt, public=split.public, seed=seed, progress=progress,
                        private=split.private[name], eval_scoring=config.data.eval_scoring)
    return ClientRuntime(party, split.evaluation, store)


def new_run_dir(config: RunConfig, resume: bool = False) -> Path:
    name = config.run_name or datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = config.output_dir / name
    if resume:
        if not (run_dir / "metrics.json").is_file():
            raise FileNotFoundError(f"nothing to resume in {run_dir}: no metrics.json")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"run folder {run_dir} already exists and is not empty; choose another run_name "
                              f"or resume it")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


class LocalTransport:
    """Calls each client's runtime in this process, one after another; errors drop the client."""

    def __init__(self, runtimes: dict[str, ClientRuntime]):
        self.runtimes = runtimes

    def call(self, phase: str, payloads: dict[str, dict]) -> dict:
        replies = {}
        for name, payload in payloads.items():
            try:
                replies[name] = self.runtimes[name].handle(phase, payload)
            except Exception as error:  # one client's failure must not end the round
                replies[name] = ClientFailure(f"{type(error).__name__}: {error}")
        return replies


class LocalFederation:
    def __init__(self, config: RunConfig, console: Console | None = None, questions=None, resume: bool = False,
                 zero_shot_cache: Path | None = None):
        self.config = config
        self.console = console or Console()
        self.resume = resume
        seed_everything(config.seed)
        self.split = federated_split(config, questions)
        self.progress = make_progress(disable=not self.console.is_terminal and os.environ.get("FEDMKT_PROGRESS") != "1",
                                      console=self.console)
        self.run_dir = new_run_dir(config, resume)
        self.console.print(f"[bold]loading models[/] server={config.server.source} "
                           f"clients={[c.model.source for c in config.clients]}")
        self.server = make_server(config, self.split, self.progress)
        self.runtimes = {c.name: make_client(config, c.name, self.split, self.run_dir, self.progress)
                         for c in config.clients}
        self.coordinator = Coordinator(config, self.server, self.split, LocalTransport(self.runtimes),
                                       self.run_dir, self.console, zero_shot_cache=zero_shot_cache)

    @property
    def parties(self) -> list[Party]:
        return [self.server, *(r.party for r in self.runtimes.values())]

    def prepare(self) -> None:
        """Setup before round 1: vocabulary maps both ways (cached on disk), alignments, encodings."""
        self.coordinator.prepare()
        for runtime in self.runtimes.values():
            runtime.party.sender_view(self.server.tokenizer)

    def run_round(self, round_no: int) -> dict:
        return self.coordinator.run_round(round_no)

    def run(self) -> Path:
        self.prepare()
        with self.progress:
            return self.coordinator.run(resume=self.resume)
