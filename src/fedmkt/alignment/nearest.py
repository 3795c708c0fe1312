"""Exact nearest strings under Levenshtein distance, for whole vocabularies at once.

For every query: the lowest target index at the minimum edit distance, and that distance. Four
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
3. Middle search, when thousands of queries are left (e.g. Command-R's 256k tokens against Gemma-3's
   262k, whose index affords radius 2 only): the same deletion index, built over the remaining
   queries instead, with every target's variants hashed and probed once, never stored; it settles
   the queries within radius 3, the bulk of what the far search would otherwise compare.
4. Far search, for the queries left: rapidfuzz's bit-parallel C++ Levenshtein (`process.cdist`, SIMD
   lanes, all cores) over blocks of targets of one length and one set of character classes (ASCII
   space / lower / upper / digit / other, and Unicode ranges: one script, roughly), visited in order
   of a lower bound on the distance (characters match only within a class, so a Bengali query and a
   block of CJK tokens are at least their longer length apart), skipping for each query every block
   whose bound exceeds its best so far. Queries of one length and one count of characters in each
   class share their bounds: the bounds are computed once per such group.

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
MAX_MIDDLE_RADIUS = 3  # radius of the index over the queries left after the near search (4 costs more
# than it saves: its variants match too often, e.g. 11 s against 2.5 s streaming Command-R's tokens)
_MIDDLE_MIN_QUERIES = 2048  # fewer left: the far search costs less than streaming every target
_STREAM_BUDGET = 48_000_000  # target variants hashed against it
_LONGEST_INDEXED = 24  # longer queries (few) go straight to the far search
LEVEL_WINDOW = 2
_THREADED_CELLS = 1 << 16
_FEW_QUERIES = 2048  # fewer far queries: blocks by length only (class sets of every target cost ~1 s)
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


def warm_up() -> None:
    """Load (or compile, once per installation) every numba kernel, so that timings measure the search."""
    q_chars, q_off = _codepoints(["abcd", "abce", "xbcd"])
    t_chars, t_off = _codepoints(["abcf", "zzzz"])
    _near_search(q_chars, q_off, t_chars, t_off, 1)
    _query_index_search(q_chars, q_off, np.arange(3), t_chars, t_off, 0, *_no_match(3))


def _search(queries: list[str], targets: list[str], sentinel: int) -> tuple[np.ndarray, np.ndarray]:
    q_chars, q_off = _codepoints(queries)
    t_chars, t_off = _codepoints(targets)
    radius = _affordable_radius(np.diff(t_off), np.diff(q_off))
    best_id, best_d = _near_search(q_chars, q_off, t_chars, t_off, radius) if radius else _no_match(len(queries))
    far = np.flatnonzero(best_d > radius)
    if far.size >= _MIDDLE_MIN_QUERIES:
        far = _query_index_search(q_chars, q_off, far, t_chars, t_off, radius, best_id, best_d)
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
_K_BITS = 3  # deletions per variant, up to 7, in the low bits of an index key
_K_MASK = (1 << _K_BITS) - 1
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
    """uint64 key per string variant: hash (high bits) | string id | number of deletions (_K_BITS)."""
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
                    keys[out] = (h & keep_high) | (np.uint64(t) << np.uint64(_K_BITS)) | np.uint64(k)
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
                            if np.int64(key & np.uint64(_K_MASK)) > stage:
                                continue
                            t = np.int64((key & id_mask) >> np.uint64(_K_BITS))
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
    keys, bucket_starts, shift, low_bits = _deletion_index(t_chars, t_off, radius)
    best_id, best_d = _no_match(len(q_off) - 1)
    _probe(q_chars, q_off, t_chars, t_off, keys, bucket_starts, shift, low_bits, radius, best_id, best_d)
    return best_id, best_d


def _deletion_index(chars, offsets, radius: int):
    """The strings' variants with at most `radius` deletions as sorted keys (_index_keys), where each bucket
    of keys starts, the shift that gives a hash's bucket, and the low bits that hold string id and deletions."""
    n = len(offsets) - 1
    low_bits = max(1, (n - 1).bit_length()) + _K_BITS
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(_variants_per_string(np.diff(offsets), radius), out=starts[1:])
    keys = _index_keys(chars, offsets, radius, starts, low_bits)
    bucket_bits = int(min(max(8, int(len(keys)).bit_length() - 2), 64 - low_bits))  # ~2-4 keys a bucket
    keys.sort()
    return keys, _bucket_starts(keys, 64 - bucket_bits), 64 - bucket_bits, low_bits


@numba.njit(cache=True)
def _bucket_starts(sorted_keys, shift):
    starts = np.empty((1 << (64 - shift)) + 1, dtype=np.int64)
    e = 0
    for b in range(len(starts)):
        while e < len(sorted_keys) and np.int64(sorted_keys[e] >> np.uint64(shift)) < b:
            e += 1
        starts[b] = e
    return starts


def _subset(chars: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The code points and offsets of strings `rows` alone, in that order."""
    lengths = offsets[1:][rows] - offsets[:-1][rows]
    sub_off = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=sub_off[1:])
    return chars[np.repeat(offsets[:-1][rows] - sub_off[:-1], lengths) + np.arange(sub_off[-1])], sub_off


# ---- middle search: the index over the remaining queries, all targets streamed through it ----

def _query_index_search(q_chars, q_off, rows, t_chars, t_off, known: int, best_id, best_d) -> np.ndarray:
    """Settle the queries `rows` (none within `known` of any target) whose nearest target is within a
    larger radius; returns the rows still unsettled, for the far search. Updates best_id/best_d in place.

    The queries left after the near search are few, so the deletion index goes on their side and the
    targets' variants are hashed and probed once each, never stored: the target side's radius is no
    longer bounded by an index in memory but by the time to enumerate its variants.
    """
    q_len, t_len = np.diff(q_off)[rows], np.diff(t_off)
    indexed = q_len <= _LONGEST_INDEXED
    for radius in range(MAX_MIDDLE_RADIUS, known, -1):
        compatible = np.zeros(max(int(t_len.max()), _LONGEST_INDEXED) + radius + 1, dtype=bool)
        for length in np.unique(q_len[indexed]).tolist():
            compatible[max(0, length - radius):length + radius + 1] = True
        streamed = np.flatnonzero(compatible[t_len])
        if (_variants_per_string(q_len[indexed], radius).sum() <= _INDEX_BUDGET
                and _variants_per_string(t_len[streamed], radius).sum() <= _STREAM_BUDGET):
            break
    else:
        return rows
    sub = rows[indexed]
    sub_chars, sub_off = _subset(q_chars, q_off, sub)
    keys, bucket_starts, shift, low_bits = _deletion_index(sub_chars, sub_off, radius)
    n_chunks = max(1, min(len(streamed), numba.get_num_threads()))
    local_id, local_d = _probe_targets(t_chars, t_off, streamed, sub_chars, sub_off, keys, bucket_starts, shift,
                                       low_bits, radius, known + 1, n_chunks)
    # Each chunk visited its targets in ascending id order; across chunks the lowest (distance, id) wins.
    rank = np.where(local_id >= 0, local_d * (len(t_len) + 1) + local_id, np.iinfo(np.int64).max)
    pick = rank.argmin(axis=0)
    found_id, found_d = local_id[pick, np.arange(sub.size)], local_d[pick, np.arange(sub.size)]
    hit = found_id >= 0
    best_id[sub[hit]], best_d[sub[hit]] = found_id[hit], found_d[hit]
    return np.concatenate([rows[~indexed], sub[~hit]])


@numba.njit(cache=True, parallel=True)
def _probe_targets(t_chars, t_off, streamed, q_chars, q_off, keys, bucket_starts, shift, low_bits, radius,
                   floor, n_chunks):
    """Per chunk of the streamed targets (every n_chunks-th, ascending ids), each indexed query's nearest
    target within `radius`: int64 [n_chunks, queries] ids (-1: none) and distances. No query has a target
    closer than `floor`, so a query stops being verified in a chunk once it has one there."""
    n_queries = len(q_off) - 1
    local_id = np.full((n_chunks, n_queries), -1, dtype=np.int64)
    local_d = np.full((n_chunks, n_queries), NO_MATCH, dtype=np.int64)
    max_len = max(np.max(q_off[1:] - q_off[:-1]), np.max(t_off[1:] - t_off[:-1]))
    id_mask = (np.uint64(1) << np.uint64(low_bits)) - np.uint64(1)
    for c in numba.prange(n_chunks):
        seen = np.full(n_queries, -1, dtype=np.int64)  # which target last verified each query
        deleted = np.empty(radius + 1, dtype=np.int64)
        row = np.empty(max_len + 1, dtype=np.int64)
        for s in range(c, len(streamed), n_chunks):
            t = streamed[s]
            t0, length = t_off[t], t_off[t + 1] - t_off[t]
            for k in range(min(radius, length) + 1):
                for r in range(k):
                    deleted[r] = r
                while True:
                    h = _variant_hash(t_chars, t0, length, deleted, k)
                    bucket = np.int64(h >> np.uint64(shift))
                    for e in range(bucket_starts[bucket], bucket_starts[bucket + 1]):
                        key = keys[e]
                        if (key >> np.uint64(low_bits)) != (h >> np.uint64(low_bits)):
                            continue
                        q = np.int64((key & id_mask) >> np.uint64(_K_BITS))
                        if seen[q] == t or local_d[c, q] <= floor:  # no later target can beat `floor`
                            continue
                        seen[q] = t
                        cutoff = min(local_d[c, q], radius)
                        d = _bounded_distance(q_chars, q_off[q], q_off[q + 1] - q_off[q], t_chars, t0, length,
                                              cutoff, row)
                        if d <= cutoff and d < local_d[c, q]:  # ids ascend: a tie keeps the earlier one
                            local_id[c, q], local_d[c, q] = t, d
                    if not _next_combination(deleted, k, length):
                        break
    return local_id, local_d


# ---- far search: lower-bounded blocks of rapidfuzz cdist ---------------------------------------

def _far_search(texts, q_chars, q_off, rows, targets, t_chars, t_off, sentinel, best_id, best_d) -> None:
    """Exact nearest target for queries `rows` (their texts given); updates best_id/best_d in place.

    Targets are split into blocks of one length and one set of character classes (_char_classes), or of
    one length only when few queries are left (classes then unknown). Each (query, block) pair has a lower
    bound on their distance (_block_bounds); bound levels are visited in increasing order, and at each level
    a block is compared, in one cdist call, with every query for which it sits at that level and could
    still beat (or tie with a lower id) that query's best. A query is finished once its best is below
    the level: no unvisited block can reach it.
    """
    t_len, q_len = np.diff(t_off), np.diff(q_off)[rows]
    owner = np.repeat(np.arange(len(rows)), q_len)
    row_chars, _ = _subset(q_chars, q_off, rows)
    row_class = np.where(row_chars == sentinel, -1, _char_classes(row_chars))  # a folded character matches nothing
    used = np.unique(row_class[row_class >= 0])
    if len(rows) >= _FEW_QUERIES:
        signature, classes_of = _class_signatures(_char_classes(t_chars), t_off, used)
    else:  # classes of every target cost more than they save: blocks by length, classes unknown
        signature, classes_of = np.zeros(len(t_len), dtype=np.int64), [None]
    # Blocks: targets of one length and class set, ids ascending (a stable sort keeps id order).
    order = np.lexsort((signature, t_len))
    ordered_texts = [targets[j] for j in order.tolist()]
    key = t_len[order] * len(classes_of) + signature[order]
    edges = np.flatnonzero(np.diff(key)) + 1
    starts, ends = np.r_[0, edges], np.r_[edges, len(order)]
    blocks = [(order[a:b], ordered_texts[a:b]) for a, b in zip(starts, ends)]
    block_first = order[starts]
    # Queries of one length and one count of characters in each class share every bound: one column a group.
    counts = np.bincount(owner[row_class >= 0] * len(used) + np.searchsorted(used, row_class[row_class >= 0]),
                         minlength=len(rows) * len(used)).reshape(len(rows), len(used))
    features, group_of = np.unique(np.column_stack([q_len, counts]), axis=0, return_inverse=True)
    group_of = group_of.reshape(-1)
    bound = _block_bounds(features[:, 0], features[:, 1:], used, t_len[order[starts]],
                          [classes_of[k] for k in signature[order[starts]].tolist()])

    longest = max(int(t_len.max()), int(q_len.max()))
    dtype = np.int16 if longest < np.iinfo(np.int16).max else np.int32  # distances never exceed the longest
    g_id, g_d = best_id[rows], best_d[rows]
    open_rows = np.arange(len(rows))
    level = 0
    while open_rows.size:
        # A window of levels per pass: one cdist call per block for all of them saves re-reading
        # the block's texts, for some pairs a lower level's result would have skipped.
        # Open queries listed group by group: a block's candidates are whole groups, gathered directly.
        by_group = open_rows[np.argsort(group_of[open_rows], kind="stable")]
        open_groups, group_start, group_size = np.unique(group_of[by_group], return_index=True, return_counts=True)
        open_bound = bound[:, open_groups]
        in_window = (open_bound >= level) & (open_bound < level + LEVEL_WINDOW)
        for b in np.flatnonzero(in_window.any(axis=1)):
            ids, block_texts = blocks[b]
            picked = np.flatnonzero(in_window[b])
            sizes = group_size[picked]
            at = np.repeat(group_start[picked] - np.cumsum(sizes) + sizes, sizes) + np.arange(sizes.sum())
            cand, cand_bound = by_group[at], np.repeat(open_bound[b, picked], sizes)
            active = cand[(g_d[cand] > cand_bound) | ((g_d[cand] == cand_bound) & (g_id[cand] > block_first[b]))]
            per_call = max(1, _CHUNK_CELLS // len(ids))
            for start in range(0, active.size, per_call):
                part = active[start:start + per_call]
                dist, by_block = _distances([texts[k] for k in part], block_texts, dtype)
                axis = 0 if by_block else 1
                d = dist.min(axis=axis).astype(np.int64)
                # Only queries this block can improve need the argmin (first hit: the lowest id at the minimum).
                maybe = np.flatnonzero(d <= g_d[part])
                if not maybe.size:
                    continue
                found = ids[(dist[:, maybe] if by_block else dist[maybe]).argmin(axis=axis)]
                part, d = part[maybe], d[maybe]
                better = (d < g_d[part]) | ((d == g_d[part]) & (found < g_id[part]))
                g_d[part[better]], g_id[part[better]] = d[better], found[better]
        level += LEVEL_WINDOW
        open_rows = open_rows[g_d[open_rows] >= level]
    best_id[rows], best_d[rows] = g_id, g_d


def _char_classes(chars: np.ndarray) -> np.ndarray:
    """int64 class of each code point. ASCII: space, lower case, upper case, digit, other; then a
    128-code-point range below U+3000 (alphabetic scripts: Latin-1, Greek, Cyrillic, Arabic, each Indic
    script) and a 4096-code-point range above it (CJK, Hangul: a finer range would give nearly every
    multi-character token a class set of its own). Finer classes give tighter bounds, more blocks."""
    c = chars.astype(np.int64)
    return np.select([c < 128, c < 0x3000], [_ASCII_CLASS[np.minimum(c, 127)], (c >> 7) + _N_ASCII],
                     (0x3000 >> 7) + _N_ASCII + (c >> 12))


_ASCII_CLASS = np.full(128, 4, dtype=np.int64)
_ASCII_CLASS[ord(" ")] = 0
_ASCII_CLASS[ord("a"):ord("z") + 1] = 1
_ASCII_CLASS[ord("A"):ord("Z") + 1] = 2
_ASCII_CLASS[ord("0"):ord("9") + 1] = 3
_N_ASCII = 5


def _class_signatures(t_class: np.ndarray, t_off: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, list]:
    """Per target, an id of its class set as far as queries can tell: the classes some query uses, and
    how many others it has; and each id's (used classes, count of the others)."""
    owner = np.repeat(np.arange(len(t_off) - 1), np.diff(t_off))
    pairs = np.unique(owner * (_CLASSES + 1) + t_class)  # sorted by target, then class
    pair_owner, pair_class = pairs // (_CLASSES + 1), pairs % (_CLASSES + 1)
    is_used = np.isin(pair_class, used)
    n = len(t_off) - 1
    others = np.bincount(pair_owner[~is_used], minlength=n)
    # One row per target: its used classes in order, padded with -1, then the count of the others.
    owner_u, class_u = pair_owner[is_used], pair_class[is_used]
    first = np.searchsorted(owner_u, owner_u)  # where each target's run starts
    rank = np.arange(len(owner_u)) - first
    rows = np.full((n, (int(rank.max()) + 1 if len(rank) else 0) + 1), -1, dtype=np.int64)
    rows[owner_u, rank] = class_u
    rows[:, -1] = others
    as_bytes = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first_row, signature = np.unique(as_bytes, return_index=True, return_inverse=True)
    keys = rows[first_row]
    return signature.reshape(-1), [(key[:-1][key[:-1] >= 0], int(key[-1])) for key in keys]


_CLASSES = (0x3000 >> 7) + _N_ASCII + (0x10FFFF >> 12) + 1


def _block_bounds(q_len, counts, used, block_len, block_classes) -> np.ndarray:
    """int16 [blocks, query groups]: a lower bound on the distance between every target of a block and a
    query of length q_len with counts[:, c] characters of class used[c].

    A block's targets all have length L_t and characters from exactly one set S of classes. Characters
    match only within a class, so a query of length L_q shares at most m characters with any of them (m:
    its characters whose class is in S), and each target keeps at least one character in every class of S
    the query lacks (o of them): the distance is at least max(L_q, L_t) - min(m, L_t - o).
    """
    counts = counts.astype(np.float32)
    member = np.zeros((len(used), len(block_classes)), dtype=np.float32)
    block_size = np.zeros(len(block_classes), dtype=np.int64)
    for b, entry in enumerate(block_classes):
        if entry is None:  # any class: every character may match, none is known to be outside
            member[:, b], block_size[b] = 1.0, -1
            continue
        classes, others = entry
        block_size[b] = len(classes) + others
        member[np.searchsorted(used, classes), b] = 1.0
    bound = np.empty((len(block_classes), len(q_len)), dtype=np.int16)
    step = max(1, (1 << 24) // max(1, len(block_classes)))
    for a in range(0, len(q_len), step):
        matchable = (counts[a:a + step] @ member).astype(np.int64)
        outside = block_size[None, :] - ((counts[a:a + step] > 0).astype(np.float32) @ member).astype(np.int64)
        outside[:, block_size < 0] = 0
        shared = np.minimum(matchable, block_len[None, :] - outside)
        longest = np.maximum(q_len[a:a + step, None], block_len[None, :])
        bound[:, a:a + step] = np.minimum(longest - shared, np.iinfo(np.int16).max).T
    return bound


def _distances(queries: list[str], block_texts: list[str], dtype) -> tuple[np.ndarray, bool]:
    """Levenshtein distances: [queries, block], or [block, queries] when the second value is True."""
    # rapidfuzz packs the rows of a call into SIMD lanes (strings up to 64 characters): the longer list
    # goes there. A thread pool pays off only for calls with many cells.
    workers = -1 if len(queries) * len(block_texts) >= _THREADED_CELLS else 1
    by_block = len(queries) < len(block_texts)
    rows, columns = (block_texts, queries) if by_block else (queries, block_texts)
    return process.cdist(rows, columns, scorer=Levenshtein.distance, dtype=dtype, workers=workers), by_block
