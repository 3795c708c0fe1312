"""MinED vocabulary mapping: each sender token -> the receiver token at minimum edit distance.

Tokens are compared by the text they stand for (data/token_text.py: read from each tokenizer's own
decoder), so that `Ġthe` (byte-level BPE), `▁the` (SentencePiece) and `the` after a `##`-less
WordPiece word start all read " the", and a raw byte reads the same in every scheme.

Special tokens stand for no text, so edit distance says nothing about them. The rules:
- the sender's EOS maps to the receiver's EOS (distance 0): end of text means the same whatever its
  spelling (`<|im_end|>`, `<eos>`); and the sender's end of turn (data/prompts.end_of_turn_id: what
  its chat template writes after an answer, else its EOS) maps to the receiver's, which wins where the
  two rules meet: instruction answers are trained to end in it, so its probability must land on the
  token the receiver's answers end in (Qwen's `<|im_end|>` is not its EOS, Gemma's `<end_of_turn>`
  is not `<eos>`);
- no other token ever maps to a receiver special token (BOS, pad, unk, chat markers, EOS): they are
  not targets;
- any other sender special token maps to the receiver special token written the same way, if there is
  one (`<|im_start|>` in two models of one family), else to nothing (UNMAPPED): its probability is
  dropped from a soft target and the rest renormalised.

The search (nearest.py) is exact: the true minimum edit distance, ties broken by the lowest receiver
id, hence deterministic; exact matches first, then a compiled deletion-neighbourhood index for near
tokens, then lower-bounded blocks of rapidfuzz's C++ Levenshtein for the rest. Maps are cached on
disk keyed by both vocabularies.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from fedmkt.alignment.nearest import nearest_targets
from fedmkt.data.prompts import end_of_turn_id
from fedmkt.data.token_text import canonical_tokens, special_ids, tokenizer_fingerprint
from fedmkt.files import atomic_write_bytes
from fedmkt.models import cache_root

MAP_VERSION = "mined-3"  # 3: end of turn maps to end of turn
UNMAPPED = -1


def min_edit_distance(queries: list[str], targets: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each query, (lowest target index at minimum Levenshtein distance, that distance)."""
    return nearest_targets(queries, targets)


@dataclass(frozen=True)
class VocabMap:
    """Step (3), MinED: sender id -> receiver id (int32 [V_sender], UNMAPPED for a special token without a
    counterpart) and the edit distance of each pair (-1 where unmapped)."""

    target_ids: np.ndarray
    distances: np.ndarray
    sender: str  # fingerprints
    receiver: str

    @property
    def exact_fraction(self) -> float:
        """Share of the mapped sender tokens whose text the receiver has verbatim."""
        mapped = self.target_ids != UNMAPPED
        return float((self.distances[mapped] == 0).mean()) if mapped.any() else 0.0


def _cache_file(sender: str, receiver: str, ends: tuple) -> Path:
    # The ends of turn come from the chat templates, which the vocabularies' fingerprints do not cover.
    return cache_root() / "vocab_maps" / f"{MAP_VERSION}-{sender}-to-{receiver}-end{ends[0]}-{ends[1]}.npz"


def build_vocab_map(sender_tok: PreTrainedTokenizerBase, receiver_tok: PreTrainedTokenizerBase,
                    use_cache: bool = True) -> VocabMap:
    sender, receiver = tokenizer_fingerprint(sender_tok), tokenizer_fingerprint(receiver_tok)
    path = _cache_file(sender, receiver, (end_of_turn_id(sender_tok), end_of_turn_id(receiver_tok)))
    if use_cache and path.is_file():
        with np.load(path) as stored:
            return VocabMap(stored["target_ids"], stored["distances"], sender, receiver)
    ids, dist = map_vocabularies(sender_tok, receiver_tok)
    vmap = VocabMap(ids.astype(np.int32), dist.astype(np.int32), sender, receiver)
    if use_cache:
        buffer = io.BytesIO()
        np.savez(buffer, target_ids=vmap.target_ids, distances=vmap.distances)
        atomic_write_bytes(path, buffer.getvalue())
    return vmap


def map_vocabularies(sender_tok: PreTrainedTokenizerBase,
                     receiver_tok: PreTrainedTokenizerBase) -> tuple[np.ndarray, np.ndarray]:
    """int64 [V_sender] receiver ids and distances, text tokens by MinED, special tokens by the rules above."""
    sender_text, receiver_text = canonical_tokens(sender_tok), canonical_tokens(receiver_tok)
    sender_special, receiver_special = special_ids(sender_tok), special_ids(receiver_tok)
    ids = np.full(len(sender_text), UNMAPPED, dtype=np.int64)
    dist = np.full(len(sender_text), -1, dtype=np.int64)
    queries = np.setdiff1d(np.arange(len(sender_text)), sender_special)
    targets = np.setdiff1d(np.arange(len(receiver_text)), receiver_special)
    found, found_d = min_edit_distance([sender_text[i] for i in queries], [receiver_text[j] for j in targets])
    ok = found >= 0
    ids[queries[ok]], dist[queries[ok]] = targets[found[ok]], found_d[ok]
    same_written = {receiver_text[j]: j for j in reversed(receiver_special)}  # lowest id wins
    for i in sender_special:
        j = same_written.get(sender_text[i])
        if j is not None:
            ids[i], dist[i] = j, 0
    for sent, received in ((sender_tok.eos_token_id, receiver_tok.eos_token_id),
                           (end_of_turn_id(sender_tok), end_of_turn_id(receiver_tok))):
        if sent is not None and received is not None:
            ids[sent], dist[sent] = received, 0
    return ids, dist
