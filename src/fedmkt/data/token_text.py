"""The bytes each token stands for, read from the tokenizer's own decoder.

Step (3) compares tokens across vocabularies (MinED) and places token boundaries in a text; both need,
for every id, the exact bytes that token adds to a decoded text when it sits inside a sequence. The
tokenizer's decoder (tokenizer.json) says how, so we run its steps on each token alone:

- ByteLevel (GPT-2, Llama-3, Qwen, SmolLM2): each character stands for one byte (`Ġ` = space);
- Metaspace / Replace (SentencePiece: Llama-2, Mistral, Gemma, T5): `▁` reads as a space;
- ByteFallback: `<0x0A>` is the byte 0x0A;
- WordPiece: `##ing` continues a word, any other token starts one after a space (and the decoder's
  clean-up rules, such as no space before a period, apply to it);
- BPEDecoder: an end-of-word suffix (`</w>`) reads as a space; Strip removes characters per token.

Steps that act only where a text starts are left out, since a token inside a sequence never sees them:
Metaspace's removal of the first space, Strip after Fuse (Fuse joins the tokens into one text first),
WordPiece not prefixing the first word. Bytes that are not whole UTF-8 characters (a byte-level piece of
`中`, a lone `<0xE4>`) are kept as lone surrogates ('surrogateescape'): the same byte reads the same in
every scheme, and `token_bytes` gets the raw bytes back. Special tokens stand for their written form.

A tokenizer without a `tokenizers` backend, or with a decoder step not listed, falls back to decoding
each token after an anchor token with `tokenizer.decode` (exact for whole characters; a partial
character then reads as U+FFFD).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache

from transformers import PreTrainedTokenizerBase

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class UnknownDecoder(ValueError):
    """A decoder step this module does not model; the anchored-decode fallback is used instead."""


def canonical_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The text each token id stands for inside a sequence, comparable across tokenizers (memoized per
    vocabulary). Raw bytes that are not whole characters read as lone surrogates."""
    return _canonical_of_vocabulary(tokenizer_fingerprint(tokenizer), tokenizer)


@lru_cache(maxsize=16)
def _canonical_of_vocabulary(fingerprint: str, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    return _canonical_tokens(tokenizer)  # (keyed by the vocabulary and the tokenizer it is read from)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Sorted ids of the tokens that stand for no text: the named ones (BOS, EOS, pad, unk, ...) and every
    added token marked special (chat markers, unused slots)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return sorted(set(tokenizer.all_special_ids) | {i for i, token in added.items() if token.special})


def token_bytes(text: str) -> bytes:
    """The bytes of a canonical token text (lone surrogates back to the raw bytes they stand for)."""
    return text.encode("utf-8", "surrogateescape")


@lru_cache(maxsize=64)
def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Identity of a vocabulary (ids and token strings); memoized per tokenizer object (a few per process:
    each party's own and its peers')."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    digest = hashlib.sha256("\x00".join(t or "" for t in tokens).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:24]


def _canonical_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    ids = list(range(len(tokenizer)))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        if backend is None:
            raise UnknownDecoder("no tokenizers backend")
        decoder = backend.decoder
        decode = decoder_steps(json.loads(decoder.__getstate__()) if decoder is not None else None)
        pieces = [backend.id_to_token(i) for i in ids]
        texts = [decode(p) if p is not None else "" for p in pieces]
    except UnknownDecoder:
        texts = _anchored_decode(tokenizer, ids)
    special = special_ids(tokenizer)
    for i, token in zip(special, tokenizer.convert_ids_to_tokens(special)):
        texts[i] = token or ""
    return texts


def decoder_steps(spec: dict | None):
    """A function token -> text applying the decoder `spec` (tokenizer.json's "decoder") to one token that
    sits inside a sequence."""
    if spec is None:
        return lambda token: " " + token  # tokenizers joins tokens with spaces when there is no decoder
    steps, fused = [], False
    for step in spec["decoders"] if spec["type"] == "Sequence" else [spec]:
        kind = step["type"]
        if kind == "ByteLevel":
            steps.append(_byte_level)
        elif kind == "Metaspace":
            steps.append(lambda t, r=step.get("replacement", "\u2581"): t.replace(r, " "))
        elif kind == "Replace":
            steps.append(_replace(step["pattern"], step["content"]))
        elif kind == "ByteFallback":
            steps.append(_byte_fallback)
        elif kind == "Fuse":
            fused = True
        elif kind == "Strip":
            if not fused:  # after Fuse it strips the start of the whole text only
                steps.append(_strip(step["content"], step["start"], step["stop"]))
        elif kind == "WordPiece":
            steps.append(_word_piece(step.get("prefix", "##"), step.get("cleanup", True)))
        elif kind == "BPEDecoder":
            steps.append(lambda t, s=step.get("suffix", "</w>"): t.replace(s, " "))
        else:
            raise UnknownDecoder(f"decoder step {kind}")

    def apply(token: str) -> str:
        for step_fn in steps:
            token = step_fn(token)
        return token

    return apply


@lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    # The printable alphabet of byte-level BPE (GPT-2): bytes outside it are shifted to 256 and up.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, shift = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + shift)] = b
            shift += 1
    return chars


def _byte_level(token: str) -> str:
    table = _byte_of_char()
    if all(c in table for c in token):
        return bytes(table[c] for c in token).decode("utf-8", "surrogateescape")
    return token  # the decoder passes a token with a character outside the alphabet through (added tokens)


def _byte_fallback(token: str) -> str:
    match = _BYTE_TOKEN.match(token)
    return bytes([int(match.group(1), 16)]).decode("utf-8", "surrogateescape") if match else token


def _replace(pattern: dict, content: str):
    if "String" in pattern:
        return lambda t: t.replace(pattern["String"], content)
    regex = re.compile(pattern["Regex"])
    return lambda t: regex.sub(content.replace("\\", "\\\\"), t)


def _strip(content: str, start: int, stop: int):
    def strip(token: str) -> str:
        head = 0
        while head < min(start, len(token)) and token[head] == content:
            head += 1
        tail = 0
        while tail < min(stop, len(token) - head) and token[len(token) - 1 - tail] == content:
            tail += 1
        return token[head:len(token) - tail]
    return strip


# The WordPiece decoder's clean-up (tokenizers: decoders/wordpiece.rs), applied per token.
_CLEANUP = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]


def _word_piece(prefix: str, cleanup: bool):
    def word_piece(token: str) -> str:
        token = token[len(prefix):] if token.startswith(prefix) else " " + token
        if cleanup:
            for dirty, clean in _CLEANUP:
                token = token.replace(dirty, clean)
        return token
    return word_piece


def _anchored_decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[str]:
    """Each token's text as `tokenizer.decode` writes it after an anchor token (a plain letter), which
    keeps the spaces a decoder drops at the start of a text."""
    anchor = next((i for i in tokenizer.convert_tokens_to_ids(["a", "x", "e"]) if i is not None
                   and i != tokenizer.unk_token_id), ids[0])
    kwargs = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    head = tokenizer.decode([anchor], **kwargs)
    texts = []
    for i in ids:
        text = tokenizer.decode([anchor, i], **kwargs)
        texts.append(text[len(head):] if text.startswith(head) else text)
    return texts
