"""MinED vocabulary mapping: each sender token -> the receiver token at minimum edit distance.

Tokens are first canonicalised to the text they stand for, so that `Ġthe` (byte-level BPE), `▁the`
(SentencePiece) and `the` after a `##`-less WordPiece word start all read " the". Raw bytes that
are not whole UTF-8 characters (byte-level pieces, SentencePiece `<0xNN>` fallbacks) become lone
surrogates via 'surrogateescape', identical across schemes.

The search (nearest.py) is exact: the true minimum edit distance, ties broken by the lowest receiver
id, hence deterministic; exact matches first, then a compiled deletion-neighbourhood index for near
tokens, then lower-bounded blocks of rapidfuzz's C++ Levenshtein for the rest. Maps are cached on
disk keyed by both vocabularies.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from fedmkt.alignment.nearest import nearest_targets
from fedmkt.files import atomic_write_bytes
from fedmkt.models import cache_root

MAP_VERSION = "mined-1"
_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


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
    return nearest_targets(queries, targets)


@dataclass(frozen=True)
class VocabMap:
    """Step (3), MinED: sender id -> receiver id (int32 [V_sender]) and the edit distance of each pair."""

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
        buffer = io.BytesIO()
        np.savez(buffer, target_ids=vmap.target_ids, distances=vmap.distances)
        atomic_write_bytes(path, buffer.getvalue())
    return vmap
