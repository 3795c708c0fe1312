"""KnowledgePacket: what a party shares about the public set, as flat arrays with a versioned binary form.

Per example: mean next-token cross-entropy on its answer. Per loss position (ragged per example,
through `offsets`): the top-K token ids (int32) and their log-probabilities (fp16, <= 0 so fp16 keeps
them finite). Only positions that carry loss are shipped, never the prompt. The binary form is a
safetensors buffer (no pickle: a packet from a peer cannot execute code) with a format version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load, save

FORMAT = "fedmkt.knowledge"
VERSION = 1


class PacketError(ValueError):
    """A knowledge packet that is malformed, corrupted or inconsistent; the message says what."""


@dataclass
class KnowledgePacket:
    """What steps (2) and (6) send: per public example the CE l, per loss position the top-K log-probs."""

    sender: str
    tokenizer: str  # fingerprint of the sender's vocabulary
    vocab_size: int
    example_ids: np.ndarray  # int64 [N]
    ce: np.ndarray  # float32 [N]
    offsets: np.ndarray  # int64 [N+1]: positions of example n are rows offsets[n]:offsets[n+1]
    topk_ids: np.ndarray  # int32 [P, K]
    topk_logprobs: np.ndarray  # float16 [P, K]

    @property
    def top_k(self) -> int:
        return int(self.topk_ids.shape[1])

    def rows(self, n: int) -> slice:
        return slice(int(self.offsets[n]), int(self.offsets[n + 1]))

    def index(self) -> dict[int, int]:
        return {int(uid): n for n, uid in enumerate(self.example_ids)}

    def validate(self) -> "KnowledgePacket":
        def fail(why: str):
            raise PacketError(f"knowledge packet from '{self.sender}': {why}")

        n = len(self.example_ids)
        if self.example_ids.ndim != 1 or self.ce.shape != (n,) or self.offsets.shape != (n + 1,):
            fail(f"inconsistent shapes: {n} examples, ce {self.ce.shape}, offsets {self.offsets.shape}")
        if len(np.unique(self.example_ids)) != n:
            fail("duplicate example ids")
        if self.topk_ids.ndim != 2 or self.topk_ids.shape != self.topk_logprobs.shape:
            fail(f"top-K ids {self.topk_ids.shape} and log-probs {self.topk_logprobs.shape} differ in shape")
        if n and (self.offsets[0] != 0 or self.offsets[-1] != len(self.topk_ids) or np.any(np.diff(self.offsets) < 0)):
            fail("offsets do not partition the position rows")
        if not np.all(np.isfinite(self.ce)) or np.any(self.ce < 0):
            fail("cross-entropy values must be finite and non-negative (found NaN, inf or negative)")
        if not np.all(np.isfinite(self.topk_logprobs)) or np.any(self.topk_logprobs > 1e-2):
            fail("top-K log-probabilities must be finite and <= 0 (found NaN, inf or positive)")
        if self.topk_ids.size and (self.topk_ids.min() < 0 or self.topk_ids.max() >= self.vocab_size):
            fail(f"token ids outside the sender vocabulary [0, {self.vocab_size})")
        return self

    def to_bytes(self) -> bytes:
        meta = {"format": FORMAT, "version": str(VERSION), "sender": self.sender, "tokenizer": self.tokenizer,
                "vocab_size": str(self.vocab_size)}
        return save({
            "example_ids": np.ascontiguousarray(self.example_ids, dtype=np.int64),
            "ce": np.ascontiguousarray(self.ce, dtype=np.float32),
            "offsets": np.ascontiguousarray(self.offsets, dtype=np.int64),
            # Ids of vocabularies up to 65536 tokens fit in 2 bytes.
            "topk_ids": np.ascontiguousarray(self.topk_ids, dtype=np.uint16 if self.vocab_size <= 65536 else np.int32),
            "topk_logprobs": np.ascontiguousarray(self.topk_logprobs, dtype=np.float16),
        }, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> "KnowledgePacket":
        try:
            header_len = int.from_bytes(data[:8], "little")
            meta = json.loads(data[8:8 + header_len]).get("__metadata__", {})
            arrays = load(data)
        except (SafetensorError, ValueError, UnicodeDecodeError) as error:
            raise PacketError(f"knowledge packet is corrupted or not a packet: {error}") from None
        if meta.get("format") != FORMAT:
            raise PacketError(f"not a knowledge packet (format {meta.get('format')!r})")
        if meta.get("version") != str(VERSION):
            raise PacketError(f"knowledge packet version {meta.get('version')} is not supported (expected {VERSION})")
        missing = {"example_ids", "ce", "offsets", "topk_ids", "topk_logprobs"} - set(arrays)
        if missing:
            raise PacketError(f"knowledge packet lacks {sorted(missing)}")
        arrays["topk_ids"] = arrays["topk_ids"].astype(np.int32)
        try:
            vocab_size = int(meta.get("vocab_size", ""))
        except ValueError:
            raise PacketError(f"knowledge packet has no valid vocab_size ({meta.get('vocab_size')!r})") from None
        packet = cls(sender=meta.get("sender", "?"), tokenizer=meta.get("tokenizer", ""), vocab_size=vocab_size,
                     **{k: arrays[k] for k in ("example_ids", "ce", "offsets", "topk_ids", "topk_logprobs")})
        return packet.validate()
