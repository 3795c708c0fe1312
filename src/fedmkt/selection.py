"""DualMinCE and the knowledge steps around it: pure functions over packets, no model, no transport.

A receiver (the server LLM, or a client SLM) absorbs knowledge in four steps (Algorithm 1, lines on
the server's and on each client's knowledge transfer):
    gather_ce          per public example, its own cross-entropy and each sender's      [1 + C, N]
    select_sources     DualMinCE: whose distribution each example learns from          weights [1 + C, N]
    build_targets      the selected top-K, re-indexed into the receiver's vocabulary   SoftTargets per example
    aligned_fractions  how much of each sender's knowledge has a counterpart here      (a diagnostic)
`Party.absorb` runs them and trains; the tests run them on hand-made packets.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from fedmkt.alignment.transfer import SoftTargets, own_targets, reindex
from fedmkt.alignment.vocab import VocabMap
from fedmkt.knowledge import KnowledgePacket, PacketError
from fedmkt.method_names import SELECTION_RULES



@dataclass
class AlignedKnowledge:
    """A sender's packet as one receiver sees it: its vocabulary map into the receiver's vocabulary, and
    per public example the alignment of the receiver's loss positions to the sender's (-1: no counterpart)."""

    packet: KnowledgePacket
    vmap: VocabMap
    alignments: dict[int, np.ndarray]  # uid -> [receiver loss positions] sender row within the example, or -1


class SenderFailure(ValueError):
    """One sender's knowledge could not be used (whatever raised while reading it): that sender alone is to blame."""

    def __init__(self, sender: str, error: Exception):
        super().__init__(f"its knowledge could not be used: {type(error).__name__}: {error}")
        self.sender = sender


@contextmanager
def blamed_on(sender: AlignedKnowledge):
    """Whatever raises inside, while one sender's knowledge is read, is that sender's SenderFailure."""
    try:
        yield
    except Exception as error:  # a packet that passed its checks and still breaks: its sender's fault
        raise SenderFailure(sender.packet.sender, error) from error


def gather_ce(uids: list[int], own: KnowledgePacket, senders: list[AlignedKnowledge]) -> tuple[np.ndarray, np.ndarray]:
    """Step (4) input: the receiver's CE per example [N], and each sender's [C, N] (inf where it sent nothing)."""
    own_row = own.index()
    own_ce = np.array([own.ce[own_row[u]] for u in uids], dtype=np.float64)
    peer_ce = np.full((len(senders), len(uids)), np.inf)
    for c, sender in enumerate(senders):
        with blamed_on(sender):
            rows = sender.packet.index()
            for n, u in enumerate(uids):
                if u in rows:
                    peer_ce[c, n] = sender.packet.ce[rows[u]]
    return own_ce, peer_ce


def select_sources(own_ce: np.ndarray, peer_ce: np.ndarray, rule: str) -> np.ndarray:
    """Step (4), DualMinCE: weights [1 + C, N] over (own, peer_1..peer_C) knowledge for each of N examples.

    dual_min_ce: the peer with the lowest CE, kept only where it beats the receiver's own CE; the
                 receiver's own distribution otherwise (DualMinCE, Fan et al. 2025).
    always:      the lowest-CE peer, whatever the receiver's CE.
    weighted:    all sources, weighted by softmax(-CE).
    Missing knowledge is marked by CE = inf.
    """
    peer_ce = np.atleast_2d(peer_ce)
    n = len(own_ce)
    weights = np.zeros((1 + len(peer_ce), n), dtype=np.float32)
    if rule == "weighted":
        scores = -np.vstack([own_ce[None, :], peer_ce]).astype(np.float64)
        scores -= scores.max(axis=0, keepdims=True)
        e = np.exp(scores)
        return (e / e.sum(axis=0, keepdims=True)).astype(np.float32)
    best = peer_ce.argmin(axis=0)
    best_ce = peer_ce[best, np.arange(n)]
    if rule == "dual_min_ce":
        take_peer = best_ce < own_ce
    elif rule == "always":
        take_peer = np.isfinite(best_ce)
    else:
        raise ValueError(f"unknown selection rule '{rule}'; choose one of {list(SELECTION_RULES)}")
    weights[1 + best[take_peer], np.flatnonzero(take_peer)] = 1.0
    weights[0, ~take_peer] = 1.0
    return weights


def won_examples(uids: list[int], weights: np.ndarray, senders: list[str]) -> dict[str, list[int]]:
    """Per sender, the examples whose targets draw on its knowledge (weight > 0): the rows the two-step
    exchange asks it for."""
    return {name: [u for u, w in zip(uids, weights[1 + c]) if w > 0] for c, name in enumerate(senders)}


def rows_won_by(sender: KnowledgePacket, receiver: KnowledgePacket, rule: str) -> list[int]:
    """The examples whose targets at a receiver draw on `sender`'s knowledge under `rule`, from the two
    packets' cross-entropies alone: the rows a two-step download sends that receiver."""
    uids = [int(u) for u in receiver.example_ids]
    weights = select_sources(*gather_ce(uids, receiver, [AlignedKnowledge(sender, None, {})]), rule)
    return won_examples(uids, weights, [sender.sender])[sender.sender]


def selection_rates(weights: np.ndarray, senders: list[str]) -> dict[str, float]:
    """Fraction of public examples whose knowledge came from each source ("self" first)."""
    return {name: float(w) for name, w in zip(["self", *senders], weights.mean(axis=1))}


def build_targets(uids: list[int], weights: np.ndarray, own: KnowledgePacket, senders: list[AlignedKnowledge],
                  labels: dict[int, np.ndarray]) -> dict[int, SoftTargets]:
    """Step (5) targets: per example, the selected sources' top-K at the receiver's loss positions, each
    scaled by its weight. A sender's positions without a counterpart fall back to a one-hot on the
    receiver's next token (`labels[uid]`: its answer ids)."""
    own_row = own.index()
    sender_rows = [s.packet.index() for s in senders]
    targets = {}
    for n, u in enumerate(uids):
        parts = []
        if weights[0, n] > 0:
            parts.append(own_targets(own, own_row[u]).scaled(weights[0, n]))
        for c, sender in enumerate(senders):
            if weights[1 + c, n] <= 0:
                continue
            with blamed_on(sender):
                if not sender.packet.carries(sender_rows[c][u]):
                    raise PacketError(f"selection takes example {u} from {sender.packet.sender}, whose knowledge "
                                      f"holds no top-K for it")
                parts.append(reindex(sender.packet, sender_rows[c][u], sender.alignments[u], sender.vmap,
                                     labels[u]).scaled(weights[1 + c, n]))
        targets[u] = SoftTargets.concat(parts)
    return targets


def aligned_fractions(uids: list[int], senders: list[AlignedKnowledge]) -> dict[str, float]:
    """Share of the receiver's loss positions, over every example a sender sent (selected or not), that
    have a counterpart in the sender's tokenization."""
    out = {}
    for sender in senders:
        rows = sender.packet.index()
        aligned = total = 0
        for u in uids:
            if u in rows and u in sender.alignments:
                alignment = sender.alignments[u]
                aligned += (alignment >= 0).sum()
                total += len(alignment)
        out[sender.packet.sender] = float(aligned / total) if total else 0.0
    return out
