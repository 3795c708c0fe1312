"""Re-index a sender's top-K at each receiver loss position into the receiver's vocabulary.

Aligned positions take the sender's top-K distribution (softmax over the K log-probs) with ids
mapped through the MinED vocabulary map (ids the map leaves unmapped drop out, the rest renormalised).
Positions with no counterpart, or none of whose K ids map, get a one-hot target on the receiver's NEXT
token (its label), which is what that position predicts. Two sender ids may map to
the same receiver id: the duplicate entries simply add up in the (linear) soft cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmkt.alignment.vocab import UNMAPPED, VocabMap
from fedmkt.knowledge import KnowledgePacket


@dataclass
class SoftTargets:
    ids: np.ndarray  # int64 [n_loss, K]
    probs: np.ndarray  # float32 [n_loss, K], rows sum to 1 (or to a selection weight)

    @staticmethod
    def concat(parts: list["SoftTargets"]) -> "SoftTargets":
        return SoftTargets(np.concatenate([p.ids for p in parts], axis=1),
                           np.concatenate([p.probs for p in parts], axis=1))

    def scaled(self, weight: float) -> "SoftTargets":
        return SoftTargets(self.ids, self.probs * np.float32(weight))


def softmax_rows(logprobs: np.ndarray) -> np.ndarray:
    x = logprobs.astype(np.float32)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return x / x.sum(axis=1, keepdims=True)


def own_targets(packet: KnowledgePacket, n: int) -> SoftTargets:
    """A party's own top-K at its own positions (no re-indexing)."""
    rows = packet.rows(n)
    return SoftTargets(packet.topk_ids[rows].astype(np.int64), softmax_rows(packet.topk_logprobs[rows]))


def reindex(packet: KnowledgePacket, n: int, alignment: np.ndarray, vmap: VocabMap,
            labels: np.ndarray) -> SoftTargets:
    """Step (3) applied to one example: sender example n -> receiver targets; alignment [n_loss] indexes the
    sender's loss rows or is -1."""
    rows = packet.rows(n)
    send_ids, send_logp = packet.topk_ids[rows], packet.topk_logprobs[rows]
    k = send_ids.shape[1]
    ids = np.zeros((len(alignment), k), dtype=np.int64)
    probs = np.zeros((len(alignment), k), dtype=np.float32)
    hit = alignment >= 0
    if hit.any():
        src = send_ids[alignment[hit]]
        # Ids past the tokenizer (padded embeddings) and special tokens without a counterpart carry no text.
        target = np.where(src < len(vmap.target_ids), vmap.target_ids[np.minimum(src, len(vmap.target_ids) - 1)],
                          UNMAPPED)
        mappable = target != UNMAPPED
        ids[hit] = np.where(mappable, target, 0)
        probs[hit] = np.where(mappable, softmax_rows(send_logp[alignment[hit]]), 0.0)
        mass = probs[hit].sum(axis=1, keepdims=True)
        probs[hit] /= np.maximum(mass, 1e-12)
        hit[np.flatnonzero(hit)[mass[:, 0] <= 0]] = False  # nothing left: treated as unaligned
    ids[~hit] = 0
    probs[~hit] = 0.0
    ids[~hit, 0] = labels[~hit]
    probs[~hit, 0] = 1.0
    return SoftTargets(ids, probs)
