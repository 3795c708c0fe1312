"""Which sender position carries the same next-token prediction as each receiver loss position.

Two distributions are comparable when both predict the token that starts at the same byte of the same
answer. Each tokenization knows where its answer tokens end, in bytes (data/encoding.py: from the
tokens' canonical bytes, else from character offsets; -1 where unknown), so matching is a sorted merge
of boundaries: linear time, byte-exact, inside characters too. Where several positions share a boundary (a token
that stands for no text), only the last of them, the one predicting text, is matched. A tokenization
whose boundaries are unknown falls back to dynamic time warping (DTW) with edit-distance cost between
canonical token texts (the FuseLLM / FedMKT method): costs from rapidfuzz's C++ cdist, the recurrence
compiled with numba, and its one-to-one matches of identical text kept. DTW runs on the answer window
only (the last prompt token and the answer), since the prompt/answer boundary is shared by
construction. Results are cached per public set and tokenizer pair: the public set does not change
across rounds.
"""

from __future__ import annotations

import numba
import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

from fedmkt.data.encoding import Encoded

UNALIGNED = -1


def align_by_boundaries(receiver: Encoded, sender: Encoded) -> np.ndarray:
    """int64 [receiver.n_loss]: the sender loss position predicting the token that starts at the same byte,
    or -1. Of positions sharing a boundary, on either side, the last one is the one matched."""
    recv, send = receiver.loss_boundaries, sender.loss_boundaries
    send_known = np.flatnonzero(send >= 0)  # boundaries are non-decreasing where known
    known_values = send[send_known]
    at = np.searchsorted(known_values, recv, side="right") - 1
    at_clipped = np.maximum(at, 0)
    recv_known = np.flatnonzero(recv >= 0)
    last_of_run = np.zeros(len(recv), dtype=bool)
    last_of_run[recv_known] = np.r_[recv[recv_known][1:] != recv[recv_known][:-1], True]
    hit = last_of_run & (at >= 0) & (known_values[at_clipped] == recv if len(known_values) else False)
    return np.where(hit, send_known[at_clipped] if len(send_known) else UNALIGNED, UNALIGNED).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _dtw_path(cost: np.ndarray):
    """DTW over an [n, m] cost matrix; backtrace prefers diagonal, then up, then left on ties."""
    n, m = cost.shape
    acc = np.empty((n, m), dtype=np.float64)
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                best = 0.0
            elif i == 0:
                best = acc[0, j - 1]
            elif j == 0:
                best = acc[i - 1, 0]
            else:
                best = min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
            acc[i, j] = cost[i, j] + best
    out_i = np.empty(n + m, dtype=np.int64)
    out_j = np.empty(n + m, dtype=np.int64)
    count = 0
    i, j = n - 1, m - 1
    while i > 0 or j > 0:
        out_i[count], out_j[count] = i, j
        count += 1
        diag = acc[i - 1, j - 1] if (i > 0 and j > 0) else np.inf
        up = acc[i - 1, j] if i > 0 else np.inf
        left = acc[i, j - 1] if j > 0 else np.inf
        if diag <= up and diag <= left:
            i, j = i - 1, j - 1
        elif up <= left:
            i -= 1
        else:
            j -= 1
    out_i[count], out_j[count] = 0, 0
    count += 1
    return out_i[:count][::-1].copy(), out_j[:count][::-1].copy()


def dtw_matches(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """The DTW path between two token-text sequences with edit-distance cost.

    The cost matrix comes from rapidfuzz's C++ cdist in one call; the recurrence and backtrace are
    compiled with numba.
    """
    if not a or not b:
        return []
    cost = process.cdist(a, b, scorer=Levenshtein.distance, dtype=np.int32)
    ai, bj = _dtw_path(cost)
    return list(zip(ai.tolist(), bj.tolist()))


def one_to_one(matches: list[tuple[int, int]], a: list[str], b: list[str], n: int) -> np.ndarray:
    """int64 [n]: for each a index, the b index matched to it alone with identical text, else -1."""
    out = np.full(n, UNALIGNED, dtype=np.int64)
    if not matches:
        return out
    pairs = np.asarray(matches, dtype=np.int64)
    a_count = np.bincount(pairs[:, 0], minlength=len(a))
    b_count = np.bincount(pairs[:, 1], minlength=len(b))
    for i, j in matches:
        if i < n and a_count[i] == 1 and b_count[j] == 1 and a[i] == b[j]:
            out[i] = j
    return out


def align_by_dtw(receiver: Encoded, sender: Encoded, recv_texts: list[str], send_texts: list[str]) -> np.ndarray:
    """DTW fallback over the answer windows; recv/send_texts are canonical token texts (by id)."""
    def window(e: Encoded, texts: list[str]) -> list[str]:
        return [texts[t] if t < len(texts) else "" for t in e.input_ids[e.answer_start - 1:].tolist()]

    a, b = window(receiver, recv_texts), window(sender, send_texts)
    aligned = one_to_one(dtw_matches(a, b), a, b, receiver.n_loss)
    aligned[aligned >= sender.n_loss] = UNALIGNED  # the sender's last token predicts nothing we keep
    return aligned


class SequenceAligner:
    """Step (3), token alignment: per-example position maps between one receiver and one sender
    tokenization, cached."""

    def __init__(self, recv_texts: list[str], send_texts: list[str]):
        self.recv_texts, self.send_texts = recv_texts, send_texts
        self._cache: dict[int, np.ndarray] = {}
        self.used_dtw = 0

    def align(self, receiver: Encoded, sender: Encoded) -> np.ndarray:
        if receiver.uid != sender.uid:
            raise ValueError(f"aligning different examples: {receiver.uid} vs {sender.uid}")
        cached = self._cache.get(receiver.uid)
        if cached is None:
            if receiver.boundaries_known and sender.boundaries_known:
                cached = align_by_boundaries(receiver, sender)
            else:
                cached = align_by_dtw(receiver, sender, self.recv_texts, self.send_texts)
                self.used_dtw += 1
            self._cache[receiver.uid] = cached
        return cached
