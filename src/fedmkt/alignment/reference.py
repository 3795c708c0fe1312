"""Plain-Python reference versions of the alignment algorithms, kept for tests and benchmarks.

They follow the published FuseLLM / FedMKT procedure step by step (edit distance one pair at a time,
DTW in Python loops); the fast versions in vocab.py and sequence.py must give the same answers.
"""

from __future__ import annotations

from rapidfuzz.distance import Levenshtein


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
    span starts with and extends (a "▁" a normaliser prepends before a space gets that space's offsets). Partial characters have
    no character offset, so boundaries inside a character are left out."""
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
    return out
