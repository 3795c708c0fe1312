"""MinED vocabulary mapping: each sender token -> the receiver token at minimum edit distance.

Tokens are first canonicalised to the text they stand for, so that `Ġthe` (byte-level BPE), `▁the`
(SentencePiece) and `the` after a `##`-less WordPiece word start all read " the". Raw bytes that
are not whole UTF-8 characters (byte-level pieces, SentencePiece `<0xNN>` fallbacks) become lone
surrogates via 'surrogateescape', identical across schemes.

Exact matches are taken first (lowest receiver id wins). In the rest, characters that occur in no
receiver token can never match, so they are all replaced by one sentinel character that occurs in
none either: no distance changes, but many queries (most tokens of scripts the receiver lacks)
become duplicates and are searched once. The distinct queries are searched with rapidfuzz's C++
Levenshtein (`process.cdist`, all cores) in rings of growing length difference: a target whose
length differs by d is at distance >= d, so once a query's best distance is <= r no longer ring can
beat or tie it. The answer is the exact minimum with ties broken by the lowest receiver id, hence
deterministic. Maps are cached on disk keyed by both vocabularies.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import Levenshtein
from transformers import PreTrainedTokenizerBase

from fedmkt.models import cache_root

MAP_VERSION = "mined-1"
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_CHUNK_CELLS = 1 << 25  # cdist block size (int32 cells): bounds memory at 128 MiB


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    # The printable-character alphabet of byte-level BPE (GPT-2): bytes outside it are shifted to 256+.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, shift = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + shift)] = b
            shift += 1
    return chars


def _scheme(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "generic"
    spec = json.loads(backend.to_str())
    text = json.dumps([spec.get("decoder"), spec.get("pre_tokenizer")])
    if '"ByteLevel"' in text:
        return "byte_level"
    if '"WordPiece"' in text:
        return "wordpiece"
    if "\u2581" in text or '"Metaspace"' in text or '"ByteFallback"' in text:
        return "sentencepiece"
    return "generic"


_CANONICAL: dict[str, list[str]] = {}


def canonical_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The text each token id stands for, comparable across tokenizers (memoized per vocabulary)."""
    key = tokenizer_fingerprint(tokenizer)
    if key not in _CANONICAL:
        _CANONICAL[key] = _canonical_tokens(tokenizer)
    return _CANONICAL[key]


def _canonical_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    special = set(tokenizer.all_special_tokens)
    scheme = _scheme(tokenizer)
    byte_of = _byte_level_decoder()
    out = []
    for token in tokens:
        if token is None:
            out.append("")
        elif token in special:
            out.append(token)
        elif scheme == "byte_level":
            if all(c in byte_of for c in token):
                out.append(bytes(byte_of[c] for c in token).decode("utf-8", "surrogateescape"))
            else:
                out.append(token)  # an added token written in plain text
        elif scheme == "sentencepiece":
            match = _BYTE_TOKEN.match(token)
            if match:
                out.append(bytes([int(match.group(1), 16)]).decode("utf-8", "surrogateescape"))
            else:
                out.append(token.replace("\u2581", " "))
        elif scheme == "wordpiece":
            out.append(token[2:] if token.startswith("##") else " " + token)
        else:
            out.append(tokenizer.convert_tokens_to_string([token]))
    return out


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Identity of a vocabulary (ids and token strings), cached on the tokenizer object."""
    cached = getattr(tokenizer, "_fedmkt_fingerprint", None)
    if cached is None:
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        digest = hashlib.sha256("\x00".join(t or "" for t in tokens).encode("utf-8", "surrogatepass"))
        cached = digest.hexdigest()[:24]
        tokenizer._fedmkt_fingerprint = cached
    return cached


def min_edit_distance(queries: list[str], targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each query, (lowest target index at minimum Levenshtein distance, that distance)."""
    n = len(queries)
    best_id = np.full(n, -1, dtype=np.int64)
    best_d = np.full(n, np.iinfo(np.int32).max, dtype=np.int64)
    first_of: dict[str, int] = {}
    for j, t in enumerate(targets):
        first_of.setdefault(t, j)
    alphabet = set().union(*map(set, targets)) if targets else set()
    sentinel = next(chr(c) for c in range(0xE000, 0x110000) if chr(c) not in alphabet)
    pending: dict[str, list[int]] = {}  # unmatched distinct query text (alien chars folded) -> indices
    for i, q in enumerate(queries):
        j = first_of.get(q)
        if j is None:
            folded = q if all(c in alphabet for c in q) else "".join(c if c in alphabet else sentinel for c in q)
            pending.setdefault(folded, []).append(i)
        else:
            best_id[i], best_d[i] = j, 0
    if not pending:
        return best_id, best_d

    by_length: dict[int, tuple[list[str], np.ndarray]] = {}
    lengths = np.fromiter((len(t) for t in targets), dtype=np.int64, count=len(targets))
    for length in np.unique(lengths):
        ids = np.flatnonzero(lengths == length)  # ascending ids: argmin's first hit is the lowest id
        by_length[int(length)] = ([targets[j] for j in ids], ids)
    max_target = int(lengths.max())

    groups: dict[int, list[str]] = {}
    for q in pending:
        groups.setdefault(len(q), []).append(q)
    for length, texts in groups.items():
        g_id = np.full(len(texts), -1, dtype=np.int64)
        g_d = np.full(len(texts), np.iinfo(np.int32).max, dtype=np.int64)
        active = np.arange(len(texts))
        radius = 0
        while active.size:
            for ring in sorted({length - radius, length + radius}):
                if ring not in by_length:
                    continue
                ring_texts, ring_ids = by_length[ring]
                rows = max(1, _CHUNK_CELLS // len(ring_texts))
                for start in range(0, active.size, rows):
                    block = active[start:start + rows]
                    dist = process.cdist([texts[k] for k in block], ring_texts, scorer=Levenshtein.distance,
                                         dtype=np.int32, workers=-1)
                    arg = dist.argmin(axis=1)
                    d = dist[np.arange(len(block)), arg].astype(np.int64)
                    cand = ring_ids[arg]
                    better = (d < g_d[block]) | ((d == g_d[block]) & (cand < g_id[block]))
                    g_d[block[better]], g_id[block[better]] = d[better], cand[better]
            # Every unsearched target differs in length by > radius, so is at distance > radius.
            active = active[g_d[active] > radius]
            radius += 1
            if length - radius < 0 and length + radius > max_target:
                break
        for k, text in enumerate(texts):
            for i in pending[text]:
                best_id[i], best_d[i] = g_id[k], g_d[k]
    return best_id, best_d


@dataclass(frozen=True)
class VocabMap:
    """sender id -> receiver id (int32 [V_sender]) and the edit distance of each pair."""

    target_ids: np.ndarray
    distances: np.ndarray
    sender: str  # fingerprints
    receiver: str

    @property
    def exact_fraction(self) -> float:
        return float((self.distances == 0).mean())


def _cache_file(sender: str, receiver: str) -> Path:
    return cache_root() / "vocab_maps" / f"{MAP_VERSION}-{sender}-to-{receiver}.npz"


def build_vocab_map(sender_tok: PreTrainedTokenizerBase, receiver_tok: PreTrainedTokenizerBase,
                    use_cache: bool = True) -> VocabMap:
    sender, receiver = tokenizer_fingerprint(sender_tok), tokenizer_fingerprint(receiver_tok)
    path = _cache_file(sender, receiver)
    if use_cache and path.is_file():
        with np.load(path) as stored:
            return VocabMap(stored["target_ids"], stored["distances"], sender, receiver)
    ids, dist = min_edit_distance(canonical_tokens(sender_tok), canonical_tokens(receiver_tok))
    # End of text means the same thing whatever its spelling.
    if sender_tok.eos_token_id is not None and receiver_tok.eos_token_id is not None:
        ids[sender_tok.eos_token_id], dist[sender_tok.eos_token_id] = receiver_tok.eos_token_id, 0
    vmap = VocabMap(ids.astype(np.int32), dist.astype(np.int32), sender, receiver)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, target_ids=vmap.target_ids, distances=vmap.distances)
        tmp.replace(path)
    return vmap
