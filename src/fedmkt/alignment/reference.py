"""Plain-Python reference versions of the alignment algorithms, kept for tests and benchmarks.

They follow the published FuseLLM / FedMKT procedure step by step (edit distance one pair at a time,
DTW in Python loops); the fast versions in vocab.py and sequence.py must give the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rapidfuzz.distance import Levenshtein

from fedmkt.data.token_text import canonical_tokens, special_ids, token_bytes


def brute_force_min_distance(query: str, targets: list[str]) -> int:
    """Exact match by list scan, else the edit distance to every target, one call per pair."""
    if query in targets:
        return 0
    return min(Levenshtein.distance(query, t) for t in targets)


def python_dtw(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """DTW path between token texts with edit-distance cost; diagonal, then up, then left on ties."""
    n, m = len(a), len(b)
    if not n or not m:
        return []
    acc = [[0.0] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            cost = Levenshtein.distance(a[i], b[j])
            if i == 0 and j == 0:
                best = 0.0
            elif i == 0:
                best = acc[0][j - 1]
            elif j == 0:
                best = acc[i - 1][0]
            else:
                best = min(acc[i - 1][j], acc[i][j - 1], acc[i - 1][j - 1])
            acc[i][j] = cost + best
    i, j, path = n - 1, m - 1, []
    while i > 0 or j > 0:
        path.append((i, j))
        diag = acc[i - 1][j - 1] if i > 0 and j > 0 else float("inf")
        up = acc[i - 1][j] if i > 0 else float("inf")
        left = acc[i][j - 1] if j > 0 else float("inf")
        if diag <= up and diag <= left:
            i, j = i - 1, j - 1
        elif up <= left:
            i -= 1
        else:
            j -= 1
    path.append((0, 0))
    return path[::-1]


def whole_character_boundaries(tokenizer, answer: str) -> dict[int, int]:
    """Loss position -> answer byte where its predicted token starts, from the tokenizer's own character
    offsets alone (the reference the byte-exact alignment is checked against). Defined after a token that
    ends on a whole character where the next token starts, or only whitespace lies between; a token with
    no text of its own keeps the boundary before it: an empty span, or a space whose span the next token's
    span starts with and extends (a "▁" a normaliser prepends before a space gets that space's offsets).
    Partial characters have no character offset, so boundaries inside a character are left out. Bytes
    count from the answer's first character that is not whitespace, as in data/encoding.py."""
    enc = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)
    spans = [tuple(s) for s in enc["offset_mapping"]]
    byte_at = [0]
    for c in answer:
        byte_at.append(byte_at[-1] + len(c.encode("utf-8", "surrogatepass")))
    out, last = {0: 0}, 0  # last: the boundary after the latest token with text, None if undefined
    for p in range(1, len(spans)):
        previous, current = spans[p - 1], spans[p]
        claimed = (previous[0] == current[0] and previous[1] < current[1]
                   and answer[previous[0]:previous[1]].isspace())  # not the first bytes of a character
        if previous[1] > previous[0] and not claimed:
            following = next((s for s in spans[p:] if s[1] > s[0]), (len(answer), len(answer)))
            whole = previous[1] <= following[0] and not answer[previous[1]:following[0]].strip()
            last = byte_at[previous[1]] if whole else None
        if last is not None:
            out[p] = last
    lead = byte_at[len(answer) - len(answer.lstrip())]
    return {p: max(b - lead, 0) for p, b in out.items()}


@dataclass
class AlignmentCheck:
    """An alignment against the two reference boundary maps: boundaries both share, shared ones not matched
    to each other, matched pairs the references place apart, and matched pairs the references cannot judge
    (inside a character)."""

    shared: int = 0
    missed: int = 0
    wrong: int = 0
    inside: list[tuple[int, int]] = field(default_factory=list)


def check_alignment(aligned: np.ndarray, receiver_ref: dict[int, int],
                    sender_ref: dict[int, int]) -> AlignmentCheck:
    """Score a receiver -> sender position map against whole_character_boundaries of both sides; of the
    positions sharing a boundary the last one is the one that must be matched, as in the aligner."""
    out = AlignmentCheck()
    last_r = {v: p for p, v in sorted(receiver_ref.items())}
    last_s = {v: p for p, v in sorted(sender_ref.items())}
    for boundary in set(last_r) & set(last_s):
        out.shared += 1
        out.missed += int(aligned[last_r[boundary]] != last_s[boundary])
    for p, q in enumerate(aligned.tolist()):
        if q >= 0 and p in receiver_ref and q in sender_ref:
            out.wrong += int(receiver_ref[p] != sender_ref[q])
        elif q >= 0:
            out.inside.append((p, q))
    return out


def decode_mismatches(tokenizer) -> list[tuple[int, str, str]]:
    """Tokens (not special) whose canonical text, read as UTF-8 with replacement, differs from what the
    tokenizer's own decode writes for them after an anchor token: (id, canonical text, decoded)."""
    texts = canonical_tokens(tokenizer)
    backend = tokenizer.backend_tokenizer
    anchor = tokenizer.convert_tokens_to_ids("a")
    head = backend.decode([anchor], skip_special_tokens=False)
    decoded = backend.decode_batch([[anchor, i] for i in range(len(tokenizer))], skip_special_tokens=False)
    special = set(special_ids(tokenizer))
    return [(i, texts[i], d[len(head):]) for i, d in enumerate(decoded)
            if i not in special and token_bytes(texts[i]).decode("utf-8", "replace") != d[len(head):]]
