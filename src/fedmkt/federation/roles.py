"""The two FedMKT roles, free of any transport: a party (server LLM or client SLM) and its state.

A party holds a LoRA-wrapped model, its tokenizer, its encoding of the public set and what it has
built for each sender's tokenizer (vocabulary map, alignments). Its steps:
    share_knowledge()      -> its KnowledgePacket on the public set (CE + top-K per loss position)
    receive(peer)          -> a peer's packet checked and mapped (vocabulary map, alignments)
    absorb(senders)        -> the knowledge steps of fedmkt.selection, then KD training
    train_private()        -> SFT on its private data (clients; DP-SGD where it has a privacy budget)
    evaluate(questions)    -> scores of one evaluation set
The local runner and the Flower apps both drive these same methods.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from fedmkt.alignment.sequence import SequenceAligner
from fedmkt.alignment.vocab import VocabMap, build_vocab_map
from fedmkt.config import FedMKTSpec, LoraSpec, TrainSpec
from fedmkt.data.encoding import Encoded, encode_questions
from fedmkt.data.questions import Question, set_sha256
from fedmkt.data.token_text import canonical_tokens, tokenizer_fingerprint
from fedmkt.evaluation import evaluate_questions
from fedmkt.knowledge import Expected, KnowledgePacket, PacketError
from fedmkt.models import LoadedModel, attach_lora, save_adapter
from fedmkt.privacy import PrivacyBudget, train_dp_sgd
from fedmkt.progress import SILENT, Reporter
from fedmkt.records import shown
from fedmkt.selection import (AlignedKnowledge, aligned_fractions, build_targets, gather_ce, select_sources,
                              selection_rates)
from fedmkt.training import ComputeClock, extract_knowledge, seeded, train_lora


# A sender's knowledge passes through three records on its way into a receiver's training (one family):
#   ReceivedPacket    a packet as it arrives, with the tokenizer registered for its sender (unchecked);
#   SenderAlignment   what the receiver builds once per sender tokenizer (vocabulary map, alignments, and
#                     the sender's own labels, against which each of its packets is checked);
#   AlignedKnowledge  (fedmkt.selection) a checked packet with that map and those alignments: what the
#                     knowledge steps (DualMinCE selection, soft targets) read.
@dataclass
class ReceivedPacket:
    """A packet as it arrives, and the tokenizer registered for its sender (public): not yet checked."""

    packet: KnowledgePacket
    tokenizer: PreTrainedTokenizerBase


@dataclass
class SenderAlignment:
    """What a receiver builds once per sender tokenizer (step 3, MinED): the vocabulary map and, per public
    example, the alignment of the receiver's loss positions to the sender's."""

    vmap: VocabMap
    alignments: dict[int, np.ndarray]  # uid -> [receiver loss positions] sender row, or -1
    labels: dict[int, np.ndarray]  # uid -> the sender's tokens at its own loss positions (checks its packets)


@dataclass
class Progress:
    """Where a party stands in the run, in one object that the runners set and the party reads: the round it
    serves (it labels per-step metrics), its training calls so far (each seeds one shuffle; checkpoints and
    client stores save it, so a resumed party shuffles on as if never stopped) and where per-step metrics go."""

    round: int = 0
    train_calls: int = 0
    step_log: Callable[[dict], None] | None = None  # per optimizer step (fedmkt.tracking.StepLog)


@dataclass
class AbsorbStats:
    loss: float
    selected: dict[str, float]  # fraction of public examples whose knowledge came from each source
    aligned_fraction: dict[str, float] = field(default_factory=dict)  # loss positions with a counterpart


class Party:
    """One model of the federation, server LLM or client SLM: the state FedMKT's steps act on."""

    def __init__(self, name: str, loaded: LoadedModel, lora: LoraSpec, train: TrainSpec, fedmkt: FedMKTSpec,
                 public: list[Question], seed: int = 0, reporter: Reporter = SILENT, eval_scoring: str = "letter",
                 system_prompt: str | None = None, shared: bool = False):
        """shared: `loaded` is a base another party holds (BaseModels): this party adds an adapter of its own."""
        self.name = name
        self.source = loaded.name
        self.tokenizer = loaded.tokenizer
        self.adapter = f"adapter_{len(loaded.model.peft_config)}" if shared else "default"
        # The adapter's initial weights depend on this party's seed alone, not on how many parties (or which
        # runner: local or Flower) drew from the global RNG before it.
        with seeded(seed, loaded.device):
            self.model = attach_lora(loaded.model, lora, source=loaded.name, adapter=self.adapter)
        loaded.model = self.model  # a party sharing this base next adds its adapter to this model
        self.device = loaded.device
        self.train_spec, self.fedmkt, self.seed = train, fedmkt, seed
        self.system_prompt = system_prompt  # how it renders chat examples, in training and evaluation alike
        self._public_questions = {q.uid: q for q in public}
        self.public_sha256 = set_sha256(public)
        self.public_hash = self.public_sha256[:16]  # what requests and packets carry
        self.public = encode_questions(self.tokenizer, public, train.max_length, system_prompt)
        self.public_by_uid = {e.uid: e for e in self.public}
        self.fingerprint = tokenizer_fingerprint(self.tokenizer)
        self.clock = ComputeClock()
        self.reporter = reporter
        self.eval_scoring = eval_scoring
        self.progress = Progress()
        self._senders: dict[str, SenderAlignment] = {}
        self._knowledge: KnowledgePacket | None = None

    @property
    def active(self):
        """The model with this party's adapter switched on (parties of one shared base take turns)."""
        if self.model.active_adapter != self.adapter:
            self.model.set_adapter(self.adapter)
        return self.model

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def _next_seed(self) -> int:
        self.progress.train_calls += 1
        return self.seed * 1000 + self.progress.train_calls

    def share_knowledge(self) -> KnowledgePacket:
        """Steps (2) and (6): knowledge on the public set; computed once per model state (absorb reuses
        what was sent)."""
        if self._knowledge is None:
            self._knowledge = extract_knowledge(
                self.active, self.public, self.pad_id, self.fedmkt.top_k, self.train_spec.batch_size,
                sender=self.name, tokenizer_id=self.fingerprint, vocab_size=int(self.model.config.vocab_size),
                clock=self.clock, reporter=self.reporter)
            self._knowledge.public_set = self.public_hash
        return self._knowledge

    def adopt_knowledge(self, packet: KnowledgePacket) -> None:
        """Take `packet` as this party's knowledge of its current model (computed by an earlier process from the
        same adapter), instead of computing it again."""
        self._knowledge = packet

    def _step_logger(self, description: str) -> Callable[[dict], None] | None:
        log = self.progress.step_log
        if log is None:
            return None

        def on_step(record: dict) -> None:
            log({"party": self.name, "round": self.progress.round, "what": description, **record})
        return on_step

    def _train(self, examples: list[Encoded], epochs: int, description: str, **kd) -> float:
        """Train on `examples` for this party's `train.epochs`, or `epochs` (the run's) where it sets none."""
        self._knowledge = None  # the model changes: its knowledge must be measured again
        epochs = self.train_spec.epochs or epochs
        return train_lora(self.active, examples, self.pad_id, self.train_spec, epochs, self._next_seed(), self.clock,
                          self.reporter, f"{self.name}: {description}", on_step=self._step_logger(description), **kd)

    def sender_alignment(self, tokenizer: PreTrainedTokenizerBase) -> SenderAlignment:
        """Step (3): vocabulary map and alignments for a sender's tokenizer, built once (ahead of round 1
        when the runner prepares) and reused every round: the public set never changes."""
        fingerprint = tokenizer_fingerprint(tokenizer)
        view = self._senders.get(fingerprint)
        if view is None:
            same = fingerprint == self.fingerprint
            public = self.public if same else encode_questions(
                tokenizer, [self._public_questions[e.uid] for e in self.public], self.train_spec.max_length)
            aligner = SequenceAligner(canonical_tokens(self.tokenizer), canonical_tokens(tokenizer))
            view = SenderAlignment(vmap=build_vocab_map(tokenizer, self.tokenizer),
                              alignments={e.uid: aligner.align(self.public_by_uid[e.uid], e) for e in public},
                              labels={e.uid: e.answer_ids for e in public})
            self._senders[fingerprint] = view
        return view

    def receive(self, peer: ReceivedPacket, round_no: int | None = None, phase: str | None = None) -> AlignedKnowledge:
        """A peer's packet, checked against what this party knows without trusting it (the exchange it was
        asked for: `round_no`, `phase`; the sender's tokenizer, the public set and its tokenization, top-K,
        the cross-entropy the packet's own log-probs allow), with its vocabulary map and alignments.
        PacketError names what is wrong."""
        fingerprint = tokenizer_fingerprint(peer.tokenizer)
        if peer.packet.tokenizer != fingerprint:
            raise PacketError(
                f"tokenizer mismatch: the packet from {shown(peer.packet.sender)} was made with vocabulary "
                f"{shown(peer.packet.tokenizer)}, but the tokenizer registered for it is {fingerprint}")
        view = self.sender_alignment(peer.tokenizer)
        peer.packet.check(Expected(labels=view.labels, top_k=self.fedmkt.top_k, public_set=self.public_hash,
                                   round=round_no, phase=phase))
        return AlignedKnowledge(peer.packet, view.vmap, view.alignments)

    @property
    def public_uids(self) -> list[int]:
        return [e.uid for e in self.public]

    def select(self, senders: list[AlignedKnowledge]) -> np.ndarray:
        """Step (4) alone, from the cross-entropies: weights [1 + C, N] over (own, senders) per public example
        (what `absorb` trains on; the two-step exchange asks each sender for the rows it won)."""
        return select_sources(*gather_ce(self.public_uids, self.share_knowledge(), senders), self.fedmkt.selection)

    def absorb(self, senders: list[AlignedKnowledge]) -> AbsorbStats:
        """Steps (4)-(5) on the server, (7) on a client: select per example among own and the received
        knowledge (DualMinCE), build the soft targets, train λ·CE + (1-λ)·soft CE."""
        own = self.share_knowledge()
        uids = self.public_uids
        weights = self.select(senders)
        targets = build_targets(uids, weights, own, senders, {e.uid: e.answer_ids for e in self.public})
        loss = self._train(self.public, self.fedmkt.kd_epochs, "distill",
                           targets=lambda e: (targets[e.uid].ids, targets[e.uid].probs),
                           ce_weight=self.fedmkt.ce_weight)
        return AbsorbStats(loss=loss, selected=selection_rates(weights, [s.packet.sender for s in senders]),
                           aligned_fraction=aligned_fractions(uids, senders))

    def encode(self, questions: list[Question]) -> list[Encoded]:
        """Questions as this party trains on them (its tokenizer, length and system prompt)."""
        return encode_questions(self.tokenizer, questions, self.train_spec.max_length, self.system_prompt)

    def train_supervised(self, examples: list[Encoded], epochs: int) -> float:
        """Plain SFT on labelled examples (the centralized baseline pools everyone's data here)."""
        return self._train(examples, epochs, "centralized SFT")

    def evaluate(self, questions: list[Question]) -> dict:
        what = f"{self.name}: evaluation on {questions[0].domain if questions else 'nothing'}"
        task = self.reporter.task(what, len(questions))
        started = time.perf_counter()
        result = evaluate_questions(self.active, self.tokenizer, questions, self.train_spec.max_length,
                                    self.train_spec.batch_size, self.clock, scoring=self.eval_scoring,
                                    system=self.system_prompt, task=task)
        task.finish(f"{what}: {len(questions)} questions in {time.perf_counter() - started:.0f}s")
        return result

    def adapter_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        # Embeddings are never adapted: peft need not look the base up (a Hub query at every checkpoint).
        state = get_peft_model_state_dict(self.model, adapter_name=self.adapter, save_embedding_layers=False)
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, {k: v.to(self.device) for k, v in state.items()},
                                  adapter_name=self.adapter)
        self._knowledge = None

    def save_adapter(self, directory: Path) -> None:
        save_adapter(self.model, directory, self.adapter)


@dataclass
class PrivateTraining:
    """What step (1) did: its mean loss (the client's own log) and, under DP-SGD, whether the budget stopped it."""

    loss: float
    budget_stop: bool = False


class ClientParty(Party):
    """A client SLM: a party with private data, fine-tuned with DP-SGD where it has a privacy budget."""

    def __init__(self, *args, private: list[Question], privacy: PrivacyBudget | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.private = self.encode(private)
        self.privacy = privacy

    def train_private(self) -> PrivateTraining:
        """Step (1): fine-tune the LoRA adapter on the private data (DP-SGD within the budget, if any)."""
        if self.fedmkt.private_epochs == 0 or not self.private:
            return PrivateTraining(float("nan"))
        if self.privacy is None:
            return PrivateTraining(self._train(self.private, self.fedmkt.private_epochs, "private SFT"))
        budget = self.privacy
        if not budget.allows(budget.steps_per_call):
            self.reporter.message(f"{self.name}: private training stopped: round {self.progress.round} would spend "
                                  f"epsilon {budget.epsilon_after(budget.steps_per_call):.3f}, above its target "
                                  f"{budget.spec.target_epsilon:g} ({budget.describe()}); it distills on public "
                                  f"knowledge only", "warning")
            return PrivateTraining(float("nan"), budget_stop=True)
        self._knowledge = None
        loss = train_dp_sgd(self.active, self.private, self.pad_id, self.train_spec, budget, self._next_seed(),
                            self.clock, self.reporter, f"{self.name}: private DP-SGD",
                            on_step=self._step_logger("private DP-SGD"))
        return PrivateTraining(loss)


def average_adapters(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """FedAvg of LoRA adapters of parties that share a base model (equal weights)."""
    keys = states[0].keys()
    for s in states[1:]:
        if s.keys() != keys:
            raise ValueError("FedAvg needs adapters of the same shape: the clients' base models differ")
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype) for k in keys}
