"""What every party sets up the same way, whichever runner drives it: seeds, data split, parties.

The local runner and the Flower apps both build on this module and never on each other.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from fedmkt.config import ModelSpec, RunConfig
from fedmkt.data.bigbench import load_bigbench
from fedmkt.data.mmlu import load_mmlu
from fedmkt.data.questions import Question
from fedmkt.data.sources import DataError
from fedmkt.data.splits import FederatedSplit
from fedmkt.data.splits import federated_split as draw_split
from fedmkt.federation.client import ClientRuntime
from fedmkt.federation.protocol import SERVER
from fedmkt.federation.roles import ClientParty, Party
from fedmkt.models import BaseModels, LoadedModel, ModelNotFoundError, load_model
from fedmkt.privacy import PrivacyBudget
from fedmkt.progress import SILENT, Reporter


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_questions(config: RunConfig) -> list[Question]:
    """The benchmark presets a config may draw from (MMLU and its BIG-bench tasks), loaded once."""
    questions = load_mmlu()
    if config.data.bigbench_tasks:
        questions += load_bigbench(config.data.bigbench_tasks)
    return questions


def federated_split(config: RunConfig, questions: list[Question] | None = None,
                    clients: list[str] | None = None) -> FederatedSplit:
    """The same split on every party: it depends only on the config and its seed. `clients`: whose private
    data this party reads (None: all, a local run); `questions`: preloaded presets."""
    return draw_split(config, clients, presets=questions)


def _load(spec: ModelSpec, field: str, seed: int, bases: BaseModels | None) -> tuple[LoadedModel, bool]:
    """The party's base model, and whether another party of this process already holds it (shared: `bases`)."""
    try:
        if bases is None:
            return load_model(spec, seed=seed), False
        return bases.load(spec, seed=seed)
    except ModelNotFoundError as error:
        raise ModelNotFoundError(f"field `{field}`: {error}") from None


def make_server(config: RunConfig, split: FederatedSplit, reporter: Reporter = SILENT,
                bases: BaseModels | None = None) -> Party:
    seed = config.seed_for("server")
    loaded, shared = _load(config.server, "server.source", config.seed, bases)
    return Party(SERVER, loaded, lora=config.lora_for("server"), train=config.train_for("server"),
                 fedmkt=config.fedmkt, public=split.public, seed=seed, reporter=reporter,
                 eval_scoring=config.data.eval_scoring, system_prompt=config.system_prompt_for("server"), shared=shared)


def privacy_budget(config: RunConfig, name: str, rows: int) -> PrivacyBudget | None:
    """Client `name`'s DP-SGD budget over its `rows` private rows, planned over every round of the run."""
    spec = config.privacy_for(name)
    if spec is None:
        return None
    train = config.train_for(name)
    return PrivacyBudget(spec, rows, expected_batch=train.batch_size * train.gradient_accumulation,
                         epochs_per_call=train.epochs or config.fedmkt.private_epochs, calls=config.fedmkt.rounds)


def make_client(config: RunConfig, name: str, split: FederatedSplit, store: Path | None,
                reporter: Reporter = SILENT, bases: BaseModels | None = None) -> ClientRuntime:
    """A client's runtime; `bases`: the base models of this process, shared by the parties of one model."""
    index = [c.name for c in config.clients].index(name)
    spec = config.clients[index]
    if name not in split.private:
        raise DataError(f"client '{name}' has no private data: set clients.{index}.private (or clients.{index}.domains "
                        f"for a benchmark preset), or, on a Flower SuperNode, private-data in its node config")
    loaded, shared = _load(spec.model, f"clients.{index}.model.source", config.seed, bases)
    party = ClientParty(name, loaded, lora=config.lora_for(name), train=config.train_for(name),
                        fedmkt=config.fedmkt, public=split.public, seed=config.seed_for(name), reporter=reporter,
                        private=split.private[name], privacy=privacy_budget(config, name, len(split.private[name])),
                        eval_scoring=config.data.eval_scoring, system_prompt=config.system_prompt_for(name),
                        shared=shared)
    return ClientRuntime(party, split.evaluation, store, split.client_eval.get(name), pinned_public=spec.public_sha256)
