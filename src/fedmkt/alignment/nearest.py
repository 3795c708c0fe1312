"""Exact nearest strings under Levenshtein distance, for whole vocabularies at once.

For every query: the lowest target index at the minimum edit distance, and that distance. Three
exact stages, cheapest first:

1. Exact matches (a dict, lowest id wins). Characters that occur in no target can never match, so
   they are all folded into one sentinel character that occurs in none either: distances do not
   change, but many queries become duplicates and are searched once.
2. Near search, compiled with numba: a deletion-neighbourhood index (symmetric-delete, as in
   SymSpell). Two strings are within distance k exactly when deleting at most k characters from
   each can make them equal (a substitution deletes on both sides), so hashing every target's
   variants with at most K deletions and probing a query's variants finds *every* target within K,
   each confirmed by a bounded dynamic-programming distance. Stages k = 1..K stop once a query's
   best is <= k: nothing unseen can beat or tie it. K shrinks when strings are long (the number of
   variants grows as length^K).
3. Far search, for queries whose nearest target is farther than K: rapidfuzz's bit-parallel C++
   Levenshtein (`process.cdist`, all cores) over blocks of targets of one length, pure ASCII or
   not, visited in order of a lower bound on the distance (length difference; characters a block
   cannot match), skipping for each query every block whose bound exceeds its best so far.

Ties go to the lowest target id at every stage, so the result is deterministic and equals the
brute-force minimum over all pairs.
"""

from __future__ import annotations

import numba
import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein

NO_MATCH = np.iinfo(np.int32).max
MAX_RADIUS = 3  # deletion bits in an index key
# Index keys take 8 bytes each, and the far search is cheap for the queries a larger radius would
# catch once the index outgrows the cache: 8M keys gives radius 3 over SmolLM2's 49k tokens and 2
# over Gemma-3's 262k, the fastest choice measured for both.
_INDEX_BUDGET = 8_000_000
_PROBE_BUDGET = 32_000_000  # query variants enumerated
LEVEL_WINDOW = 2
SMALL_CALL = 16
_CHUNK_CELLS = 1 << 25  # cdist block size (int32 cells): bounds memory at 128 MiB


def nearest_targets(queries: list[str], targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """int64 [len(queries)] lowest target index at minimum Levenshtein distance, and that distance."""
    n = len(queries)
    best_id, best_d = _no_match(n)
    if not targets:
        return best_id, best_d
    # Inserted from the highest id down, so the lowest id of a repeated text is the one kept.
    first_of = dict(zip(reversed(targets), range(len(targets) - 1, -1, -1)))
    alphabet = set("".join(first_of))
    sentinel = next(chr(c) for c in range(0xE000, 0x110000) if chr(c) not in alphabet)
    fold = dict.fromkeys(map(ord, set("".join(queries)) - alphabet), sentinel)
    exact = np.fromiter((first_of.get(q, -1) for q in queries), dtype=np.int64, count=n)
    best_id[exact >= 0], best_d[exact >= 0] = exact[exact >= 0], 0
    unmatched = np.flatnonzero(exact < 0)
    group_of: dict[str, int] = {}  # distinct unmatched query text (alien chars folded) -> group
    groups = [group_of.setdefault(queries[i].translate(fold), len(group_of)) for i in unmatched.tolist()]
    if group_of:
        found_id, found_d = _search(list(group_of), targets, ord(sentinel))
        best_id[unmatched], best_d[unmatched] = found_id[groups], found_d[groups]
    return best_id, best_d


def _search(queries: list[str], targets: list[str], sentinel: int) -> tuple[np.ndarray, np.ndarray]:
    q_chars, q_off = _codepoints(queries)
    t_chars, t_off = _codepoints(targets)
    radius = _affordable_radius(np.diff(t_off), np.diff(q_off))
    best_id, best_d = _near_search(q_chars, q_off, t_chars, t_off, radius) if radius else _no_match(len(queries))
    far = np.flatnonzero(best_d > radius)
    if far.size:
        _far_search([queries[i] for i in far], q_chars, q_off, far, targets, t_chars, t_off, sentinel, best_id,
                    best_d)
    return best_id, best_d


def _no_match(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(best ids, best distances) for n queries before any target is found: -1 and NO_MATCH."""
    return np.full(n, -1, dtype=np.int64), np.full(n, NO_MATCH, dtype=np.int64)


def _codepoints(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All texts' code points (int32, lone surrogates kept) and int64 [n + 1] offsets."""
    chars = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int32)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), out=offsets[1:])
    return chars, offsets


def _variants_per_string(lengths: np.ndarray, radius: int) -> np.ndarray:
    """int64 [n]: deletion variants (0..radius characters removed) of strings of these lengths."""
    total, choose_k = np.zeros_like(lengths), np.ones_like(lengths)
    for k in range(radius + 1):
        total += choose_k
        choose_k = choose_k * np.maximum(lengths - k, 0) // (k + 1)  # C(n, k+1), exact in integers
    return total


def _affordable_radius(target_lengths: np.ndarray, query_lengths: np.ndarray) -> int:
    """The largest near-search radius whose index (and query enumeration) fits the budgets."""
    radius = 0
    while radius < MAX_RADIUS and _variants_per_string(target_lengths, radius + 1).sum() <= _INDEX_BUDGET and (
            _variants_per_string(query_lengths, radius + 1).sum() <= _PROBE_BUDGET):
        radius += 1
    return radius


# ---- near search: deletion-neighbourhood index -------------------------------------------------

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@numba.njit(cache=True, nogil=True, inline="always")
def _variant_hash(chars, start, length, deleted, n_deleted):
    """FNV-1a over the characters left after deleting the sorted positions `deleted[:n_deleted]`."""
    h = _FNV_OFFSET
    skip = 0
    for p in range(length):
        if skip < n_deleted and deleted[skip] == p:
            skip += 1
            continue
        h = (h ^ np.uint64(chars[start + p])) * _FNV_PRIME
    h ^= np.uint64(length - n_deleted)
    # splitmix64 finaliser: spreads the bits, the top ones pick the bucket
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@numba.njit(cache=True, nogil=True, inline="always")
def _next_combination(deleted, k, length):
    """Advance sorted positions `deleted[:k]` to the next k-subset of range(length); False when done."""
    i = k - 1
    while i >= 0 and deleted[i] == length - k + i:
        i -= 1
    if i < 0:
        return False
    deleted[i] += 1
    for r in range(i + 1, k):
        deleted[r] = deleted[r - 1] + 1
    return True


@numba.njit(cache=True, parallel=True)
def _index_keys(chars, offsets, radius, starts, low_bits):
    """uint64 key per target variant: hash (high bits) | target id | number of deletions (2 bits)."""
    keys = np.empty(starts[-1], dtype=np.uint64)
    keep_high = ~((np.uint64(1) << np.uint64(low_bits)) - np.uint64(1))
    n = len(offsets) - 1
    n_chunks = min(n, 256)
    for c in numba.prange(n_chunks):
        deleted = np.empty(radius + 1, dtype=np.int64)
        for t in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            start, length = offsets[t], offsets[t + 1] - offsets[t]
            out = starts[t]
            for k in range(min(radius, length) + 1):
                for r in range(k):
                    deleted[r] = r
                while True:
                    h = _variant_hash(chars, start, length, deleted, k)
                    keys[out] = (h & keep_high) | (np.uint64(t) << np.uint64(2)) | np.uint64(k)
                    out += 1
                    if not _next_combination(deleted, k, length):
                        break
    return keys


@numba.njit(cache=True, nogil=True)
def _bounded_distance(a, a0, la, b, b0, lb, cutoff, row):
    """Levenshtein distance if <= cutoff, else cutoff + 1."""
    if abs(la - lb) > cutoff:
        return cutoff + 1
    for j in range(lb + 1):
        row[j] = j
    for i in range(1, la + 1):
        diag = row[0]
        row[0] = i
        low = i
        ca = a[a0 + i - 1]
        for j in range(1, lb + 1):
            up = row[j]
            cost = diag + (0 if ca == b[b0 + j - 1] else 1)
            if up + 1 < cost:
                cost = up + 1
            if row[j - 1] + 1 < cost:
                cost = row[j - 1] + 1
            row[j] = cost
            diag = up
            if cost < low:
                low = cost
        if low > cutoff:
            return cutoff + 1
    return row[lb] if row[lb] <= cutoff else cutoff + 1


@numba.njit(cache=True, parallel=True)
def _probe(q_chars, q_off, t_chars, t_off, keys, bucket_starts, shift, low_bits, radius, best_id, best_d):
    n_queries, n_targets = len(q_off) - 1, len(t_off) - 1
    n_chunks = min(n_queries, 256)
    max_len = max(np.max(q_off[1:] - q_off[:-1]), np.max(t_off[1:] - t_off[:-1]))
    id_mask = (np.uint64(1) << np.uint64(low_bits)) - np.uint64(1)
    for c in numba.prange(n_chunks):
        seen = np.full(n_targets, -1, dtype=np.int64)  # which query last verified each target
        deleted = np.empty(radius + 1, dtype=np.int64)
        row = np.empty(max_len + 1, dtype=np.int64)
        for q in range(c * n_queries // n_chunks, (c + 1) * n_queries // n_chunks):
            q0, length = q_off[q], q_off[q + 1] - q_off[q]
            bid, bd = -1, NO_MATCH
            for stage in range(1, radius + 1):
                for k in range(min(stage, length) + 1):
                    for r in range(k):
                        deleted[r] = r
                    while True:
                        h = _variant_hash(q_chars, q0, length, deleted, k)
                        bucket = np.int64(h >> np.uint64(shift))
                        for e in range(bucket_starts[bucket], bucket_starts[bucket + 1]):
                            key = keys[e]
                            if (key >> np.uint64(low_bits)) != (h >> np.uint64(low_bits)):
                                continue
                            if np.int64(key & np.uint64(3)) > stage:
                                continue
                            t = np.int64((key & id_mask) >> np.uint64(2))
                            if seen[t] == q:
                                continue
                            seen[t] = q
                            # A target farther than min(best, radius) can never be used later either.
                            cutoff = min(bd, radius)
                            d = _bounded_distance(q_chars, q0, length, t_chars, t_off[t], t_off[t + 1] - t_off[t],
                                                  cutoff, row)
                            if d <= cutoff and (d < bd or (d == bd and t < bid)):
                                bid, bd = t, d
                        if not _next_combination(deleted, k, length):
                            break
                if bd <= stage:  # every target within `stage` has been verified
                    break
            best_id[q], best_d[q] = bid, bd


def _near_search(q_chars, q_off, t_chars, t_off, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest target for queries within `radius`; NO_MATCH (id -1) for the others."""
    n_targets = len(t_off) - 1
    low_bits = max(1, (n_targets - 1).bit_length()) + 2
    starts = np.zeros(n_targets + 1, dtype=np.int64)
    np.cumsum(_variants_per_string(np.diff(t_off), radius), out=starts[1:])
    keys = _index_keys(t_chars, t_off, radius, starts, low_bits)
    bucket_bits = int(min(max(8, int(len(keys)).bit_length() - 2), 64 - low_bits))  # ~2-4 keys a bucket
    keys, bucket_starts = _bucket_sort(keys, 64 - bucket_bits)
    best_id, best_d = _no_match(len(q_off) - 1)
    _probe(q_chars, q_off, t_chars, t_off, keys, bucket_starts, 64 - bucket_bits, low_bits, radius,
           best_id, best_d)
    return best_id, best_d


def _bucket_sort(keys: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted keys and where each bucket (the top 64 - shift bits) starts: [2^(64 - shift) + 1]."""
    keys.sort()
    return keys, _bucket_starts(keys, shift)


@numba.njit(cache=True)
def _bucket_starts(sorted_keys, shift):
    starts = np.empty((1 << (64 - shift)) + 1, dtype=np.int64)
    e = 0
    for b in range(len(starts)):
        while e < len(sorted_keys) and np.int64(sorted_keys[e] >> np.uint64(shift)) < b:
            e += 1
        starts[b] = e
    return starts


# ---- far search: lower-bounded blocks of rapidfuzz cdist ---------------------------------------

def _far_search(texts, q_chars, q_off, rows, targets, t_chars, t_off, sentinel, best_id, best_d) -> None:
    """Exact nearest target for queries `rows` (their texts given); updates best_id/best_d in place.

    Targets are split into blocks of one length, pure ASCII or not. Each (query, block) pair has a
    lower bound on their distance; bound levels are visited in increasing order, and at each level a
    block is compared, in one cdist call, with every query for which it sits at that level and could
    still beat (or tie with a lower id) that query's best. A query is finished once its best is
    below the level: no unvisited block can reach it.
    """
    t_len = np.diff(t_off)
    t_ascii = _counts(t_chars < 128, t_off) == t_len
    # Blocks: targets of one length, pure ASCII or not, ids ascending (a stable sort keeps id order).
    order = np.lexsort((~t_ascii, t_len))
    ordered_texts = [targets[j] for j in order.tolist()]
    key = t_len[order] * 2 + ~t_ascii[order]
    edges = np.flatnonzero(np.diff(key)) + 1
    starts, ends = np.r_[0, edges], np.r_[edges, len(order)]
    blocks = [(order[a:b], ordered_texts[a:b]) for a, b in zip(starts, ends)]
    block_len, block_ascii = t_len[order[starts]], t_ascii[order[starts]]
    block_first = order[starts]

    # A pure-ASCII target can match only a query's ASCII characters; no target matches a folded one.
    q_len = np.diff(q_off)[rows]
    q_ascii = _counts(q_chars < 128, q_off)[rows]
    q_matchable = q_len - _counts(q_chars == sentinel, q_off)[rows]
    matchable = np.where(block_ascii[None, :], q_ascii[:, None], q_matchable[:, None])
    bound = np.maximum(q_len[:, None], block_len[None, :]) - np.minimum(matchable, block_len[None, :])

    g_id, g_d = best_id[rows], best_d[rows]
    open_rows = np.arange(len(rows))
    level = 0
    while open_rows.size:
        # A window of levels per pass: one cdist call per block for all of them saves re-reading
        # the block's texts, for some pairs a lower level's result would have skipped.
        in_window = (bound[open_rows] >= level) & (bound[open_rows] < level + LEVEL_WINDOW)
        for b in np.flatnonzero(in_window.any(axis=0)):
            ids, block_texts = blocks[b]
            cand = open_rows[in_window[:, b]]
            cand_bound = bound[cand, b]
            active = cand[(g_d[cand] > cand_bound) | ((g_d[cand] == cand_bound) & (g_id[cand] > block_first[b]))]
            per_call = max(1, _CHUNK_CELLS // len(ids))
            for start in range(0, active.size, per_call):
                part = active[start:start + per_call]
                dist = _distances([texts[k] for k in part], block_texts)
                arg = dist.argmin(axis=1)  # first hit: the lowest id at this block's minimum
                d = dist[np.arange(len(part)), arg].astype(np.int64)
                found = ids[arg]
                better = (d < g_d[part]) | ((d == g_d[part]) & (found < g_id[part]))
                g_d[part[better]], g_id[part[better]] = d[better], found[better]
        level += LEVEL_WINDOW
        open_rows = open_rows[g_d[open_rows] >= level]
    best_id[rows], best_d[rows] = g_id, g_d


def _distances(queries: list[str], block_texts: list[str]) -> np.ndarray:
    """int32 [queries, block] Levenshtein distances."""
    if len(queries) < SMALL_CALL:
        # Few queries: rapidfuzz vectorises over the rows, and a thread pool does not pay off.
        return process.cdist(block_texts, queries, scorer=Levenshtein.distance, dtype=np.int32, workers=1).T
    return process.cdist(queries, block_texts, scorer=Levenshtein.distance, dtype=np.int32, workers=-1)


def _counts(char_mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """int64 [n]: how many characters of each string the mask selects."""
    owner = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    return np.bincount(owner, weights=char_mask, minlength=len(offsets) - 1).astype(np.int64)
