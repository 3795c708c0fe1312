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
