"""The two FedMKT roles, free of any transport: a party (server LLM or client SLM) and its steps.

A party holds a LoRA-wrapped model, its tokenizer and its encoding of the public set. It can
    share_knowledge()      -> its KnowledgePacket on the public set (CE + top-K per loss position)
    absorb(peers)          -> align peers' packets to its vocabulary, select per example, train
    train_private()        -> SFT on its private data (clients)
    evaluate(questions)    -> multiple-choice accuracy
The local runner and the Flower apps both drive these same methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from fedmkt.alignment.sequence import SequenceAligner
from fedmkt.alignment.transfer import SoftTargets, own_targets, reindex
from fedmkt.alignment.vocab import VocabMap, build_vocab_map, canonical_tokens, tokenizer_fingerprint
from fedmkt.config import FedMKTSpec, LoraSpec, TrainSpec
from fedmkt.data.encoding import Encoded, encode
from fedmkt.data.questions import Question
from fedmkt.data.prompts import answer_text, prompt_text
from fedmkt.distill import select_sources
from fedmkt.evaluation import evaluate_questions
from fedmkt.knowledge import KnowledgePacket, PacketError
from fedmkt.models import LoadedModel, attach_lora
from fedmkt.training import ComputeClock, extract_knowledge, train_lora


def encode_questions(tokenizer: PreTrainedTokenizerBase, questions: list[Question], max_length: int) -> list[Encoded]:
    return [encode(tokenizer, q.uid, prompt_text(q), answer_text(q), max_length) for q in questions]


@dataclass
class Peer:
    """What a receiver knows of a sender: its tokenizer (public) and its latest packet."""

    packet: KnowledgePacket
    tokenizer: PreTrainedTokenizerBase


@dataclass
class _SenderView:
    vmap: VocabMap
    aligner: SequenceAligner
    public: dict[int, Encoded]  # the sender's tokenization of the public set, by uid


@dataclass
class AbsorbStats:
    loss: float
    selected: dict[str, float]  # fraction of public examples whose knowledge came from each source
    aligned_fraction: dict[str, float] = field(default_factory=dict)  # loss positions with a counterpart


class Party:
    def __init__(self, name: str, loaded: LoadedModel, lora: LoraSpec, train: TrainSpec, fedmkt: FedMKTSpec,
                 public: list[Question], seed: int = 0, progress=None, eval_scoring: str = "letter"):
        self.name = name
        self.source = loaded.name
        self.tokenizer = loaded.tokenizer
        self.model = attach_lora(loaded.model, lora)
        self.device = loaded.device
        self.train_spec, self.fedmkt, self.seed = train, fedmkt, seed
        self._texts = {q.uid: (prompt_text(q), answer_text(q)) for q in public}
        self.public = encode_questions(self.tokenizer, public, train.max_length)
        self.public_by_uid = {e.uid: e for e in self.public}
        self.fingerprint = tokenizer_fingerprint(self.tokenizer)
        self.clock = ComputeClock()
        self.progress = progress
        self._senders: dict[str, _SenderView] = {}
        self._knowledge: KnowledgePacket | None = None
        self.train_calls = 0
        self.eval_scoring = eval_scoring
        self._pooled: tuple[list[int], list[Encoded]] | None = None  # (uids, encodings) of centralized SFT

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    def _next_seed(self) -> int:
        self.train_calls += 1
        return self.seed * 1000 + self.train_calls

    def share_knowledge(self) -> KnowledgePacket:
        """Knowledge on the public set; computed once per model state (absorb reuses what was sent)."""
        if self._knowledge is None:
            self._knowledge = extract_knowledge(
                self.model, self.public, self.pad_id, self.fedmkt.top_k, self.train_spec.batch_size,
                sender=self.name, tokenizer_id=self.fingerprint, vocab_size=int(self.model.config.vocab_size),
                clock=self.clock, progress=self.progress)
        return self._knowledge

    def _train(self, examples: list[Encoded], epochs: int, description: str, **kd) -> float:
        self._knowledge = None  # the model changes: its knowledge must be measured again
        return train_lora(self.model, examples, self.pad_id, self.train_spec, epochs, self._next_seed(), self.clock,
                          self.progress, f"{self.name}: {description}", **kd)

    def _view(self, peer: Peer) -> _SenderView:
        fingerprint = tokenizer_fingerprint(peer.tokenizer)
        if peer.packet.tokenizer != fingerprint:
            raise PacketError(
                f"tokenizer mismatch: the packet from '{peer.packet.sender}' was made with vocabulary "
                f"{peer.packet.tokenizer}, but the tokenizer registered for it is {fingerprint}")
        return self.sender_view(peer.tokenizer)

    def sender_view(self, tokenizer: PreTrainedTokenizerBase) -> _SenderView:
        """Vocabulary map, sequence aligner and public encoding for a sender's tokenizer: built once
        (ahead of round 1 when the runner prepares), reused every round."""
        fingerprint = tokenizer_fingerprint(tokenizer)
        view = self._senders.get(fingerprint)
        if view is None:
            same = fingerprint == self.fingerprint
            public = self.public if same else [encode(tokenizer, e.uid, *self._texts[e.uid], self.train_spec.max_length)
                                               for e in self.public]
            view = _SenderView(vmap=build_vocab_map(tokenizer, self.tokenizer),
                               aligner=SequenceAligner(canonical_tokens(self.tokenizer), canonical_tokens(tokenizer)),
                               public={e.uid: e for e in public})
            for e in public:  # the alignments too: the public set never changes
                view.aligner.align(self.public_by_uid[e.uid], e)
            self._senders[fingerprint] = view
        return view

    def absorb(self, peers: list[Peer]) -> AbsorbStats:
        """One FedMKT distillation step: select per example among own and peers' knowledge, train."""
        own = self.share_knowledge()
        own_row = own.index()
        views = [self._view(p) for p in peers]
        uids = [e.uid for e in self.public]
        own_ce = np.array([own.ce[own_row[u]] for u in uids], dtype=np.float64)
        peer_ce = np.full((len(peers), len(uids)), np.inf)
        peer_rows = []
        for c, peer in enumerate(peers):
            rows = peer.packet.index()
            peer_rows.append(rows)
            for n, u in enumerate(uids):
                if u in rows:
                    peer_ce[c, n] = peer.packet.ce[rows[u]]
        weights = select_sources(own_ce, peer_ce, self.fedmkt.selection)
        # How much of each peer's knowledge has a counterpart here, over everything it sent (selected
        # or not): the alignments are cached, so this costs lookups only.
        aligned_counts = np.zeros(len(peers))
        total_positions = np.zeros(len(peers))
        for c, view in enumerate(views):
            for u in uids:
                if u in peer_rows[c] and u in view.public:
                    alignment = view.aligner.align(self.public_by_uid[u], view.public[u])
                    aligned_counts[c] += (alignment >= 0).sum()
                    total_positions[c] += len(alignment)

        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for n, u in enumerate(uids):
            receiver = self.public_by_uid[u]
            parts = []
            if weights[0, n] > 0:
                parts.append(own_targets(own, own_row[u]).scaled(weights[0, n]))
            for c, (peer, view) in enumerate(zip(peers, views)):
                if weights[1 + c, n] <= 0:
                    continue
                alignment = view.aligner.align(receiver, view.public[u])
                parts.append(reindex(peer.packet, peer_rows[c][u], alignment, view.vmap,
                                     receiver.answer_ids).scaled(weights[1 + c, n]))
            merged = SoftTargets.concat(parts)
            cache[u] = (merged.ids, merged.probs)

        loss = self._train(self.public, self.fedmkt.kd_epochs, "distill", targets=lambda e: cache[e.uid],
                           ce_weight=self.fedmkt.ce_weight)
        names = ["self"] + [p.packet.sender for p in peers]
        selected = {name: float(w) for name, w in zip(names, weights.mean(axis=1))}
        aligned = {p.packet.sender: float(a / t) if t else 0.0
                   for p, a, t in zip(peers, aligned_counts, total_positions)}
        return AbsorbStats(loss=loss, selected=selected, aligned_fraction=aligned)

    def train_supervised(self, questions: list[Question], epochs: int) -> float:
        """Plain SFT on labelled questions (the centralized baseline pools everyone's data here)."""
        cached = self._pooled
        if cached is None or cached[0] != [q.uid for q in questions]:
            cached = ([q.uid for q in questions], encode_questions(self.tokenizer, questions, self.train_spec.max_length))
            self._pooled = cached
        return self._train(cached[1], epochs, "centralized SFT")

    def evaluate(self, questions: list[Question]) -> dict:
        return evaluate_questions(self.model, self.tokenizer, questions, self.train_spec.max_length,
                                  self.train_spec.batch_size, self.clock, scoring=self.eval_scoring)

    def adapter_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(self.model).items()}

    def load_adapter_state(self, state: dict[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, {k: v.to(self.device) for k, v in state.items()})
        self._knowledge = None

    def save_adapter(self, directory: Path) -> None:
        self.model.save_pretrained(str(directory))


class ClientParty(Party):
    """A client SLM: a party with private data."""

    def __init__(self, *args, private: list[Question], **kwargs):
        super().__init__(*args, **kwargs)
        self.private = encode_questions(self.tokenizer, private, self.train_spec.max_length)

    def train_private(self) -> float:
        if self.fedmkt.private_epochs == 0 or not self.private:
            return float("nan")
        return self._train(self.private, self.fedmkt.private_epochs, "private SFT")


def average_adapters(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """FedAvg of LoRA adapters of parties that share a base model (equal weights)."""
    keys = states[0].keys()
    for s in states[1:]:
        if s.keys() != keys:
            raise ValueError("FedAvg needs adapters of the same shape: the clients' base models differ")
    return {k: torch.stack([s[k].float() for s in states]).mean(0).to(states[0][k].dtype) for k in keys}
