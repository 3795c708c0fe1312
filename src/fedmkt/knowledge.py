"""KnowledgePacket: what a party shares about the public set, as flat arrays with a versioned binary form.

Per example: mean next-token cross-entropy on its answer. Per loss position (ragged per example,
through `offsets`): the top-K token ids (int32) and their log-probabilities (fp16, <= 0 so fp16 keeps
them finite). Only positions that carry loss are shipped, never the prompt. The binary form is a
safetensors buffer (no pickle: a packet from a peer cannot execute code) with a format version.

A packet comes from another party, so nothing in it is trusted: `from_bytes` turns any failure to
decode into a PacketError, `validate` checks its internal consistency, and `check` holds it against
what the receiver knows independently (the public set, each example's tokenization, top-K, and the
labels, which bound the cross-entropy a sender may claim).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load, save

FORMAT = "fedmkt.knowledge"
VERSION = 1
ARRAYS = ("example_ids", "ce", "offsets", "topk_ids", "topk_logprobs")
MAX_HEADER_BYTES = 1 << 20  # a header describes five arrays; anything larger is not ours


class PacketError(ValueError):
    """A knowledge packet that is malformed, corrupted or inconsistent; the message says what."""


@dataclass(frozen=True)
class Expected:
    """What a receiver knows of a sender's packet without trusting it: the public examples (ids, and per
    example the sender's answer token ids, whose count is the number of loss positions) and top-K."""

    labels: dict[int, np.ndarray]  # uid -> sender's token ids at its loss positions (what each predicts)
    top_k: int
    public_set: str = ""  # content hash of the receiver's public set ("" skips the check)
    ce_tolerance: float = 0.02  # fp16 log-probs: relative rounding ~1e-3, plus slack


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
    public_set: str = ""  # content hash of the public set the sender computed it on

    @property
    def top_k(self) -> int:
        return int(self.topk_ids.shape[1])

    def rows(self, n: int) -> slice:
        return slice(int(self.offsets[n]), int(self.offsets[n + 1]))

    def index(self) -> dict[int, int]:
        return {int(uid): n for n, uid in enumerate(self.example_ids)}

    def validate(self) -> "KnowledgePacket":
        """Internal consistency: shapes, kinds, offsets, finite values, ids inside the vocabulary."""
        def fail(why: str):
            raise PacketError(f"knowledge packet from '{self.sender}': {why}")

        arrays = {name: getattr(self, name) for name in ARRAYS}
        for name, array in arrays.items():
            if not isinstance(array, np.ndarray):
                fail(f"{name} is not an array")
        for name, ndim in (("example_ids", 1), ("ce", 1), ("offsets", 1), ("topk_ids", 2), ("topk_logprobs", 2)):
            if arrays[name].ndim != ndim:
                fail(f"{name} has {arrays[name].ndim} dimensions, expected {ndim}")
        for name, kind in (("example_ids", "iu"), ("offsets", "iu"), ("topk_ids", "iu"), ("ce", "f"),
                           ("topk_logprobs", "f")):
            if arrays[name].dtype.kind not in kind:
                fail(f"{name} has dtype {arrays[name].dtype}")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 1:
            fail(f"vocab_size {self.vocab_size!r} is not a positive integer")
        n = len(self.example_ids)
        if self.ce.shape != (n,) or self.offsets.shape != (n + 1,):
            fail(f"inconsistent shapes: {n} examples, ce {self.ce.shape}, offsets {self.offsets.shape}")
        if len(np.unique(self.example_ids)) != n:
            fail("duplicate example ids")
        if self.topk_ids.shape != self.topk_logprobs.shape:
            fail(f"top-K ids {self.topk_ids.shape} and log-probs {self.topk_logprobs.shape} differ in shape")
        if self.topk_ids.shape[1] < 1:
            fail("top-K of 0: no knowledge in it")
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.topk_ids) or np.any(np.diff(self.offsets) < 0):
            fail("offsets do not partition the position rows")
        if not np.all(np.isfinite(self.ce)) or np.any(self.ce < 0):
            fail("cross-entropy values must be finite and non-negative (found NaN, inf or negative)")
        if not np.all(np.isfinite(self.topk_logprobs)) or np.any(self.topk_logprobs > 1e-2):
            fail("top-K log-probabilities must be finite and <= 0 (found NaN, inf or positive)")
        if self.topk_ids.size and (self.topk_ids.min() < 0 or self.topk_ids.max() >= self.vocab_size):
            fail(f"token ids outside the sender vocabulary [0, {self.vocab_size})")
        return self

    def check(self, expected: Expected) -> "KnowledgePacket":
        """Hold the packet against what the receiver knows: the public examples, each one's number of loss
        positions, top-K, and a lower bound on each example's cross-entropy from the packet's own
        log-probs (where the label is in the top-K its log-prob is known; elsewhere the K-th bounds it)."""
        def fail(why: str):
            raise PacketError(f"knowledge packet from '{self.sender}': {why}")

        if expected.public_set and self.public_set != expected.public_set:
            fail(f"public set mismatch: it was computed on public set {self.public_set or '(unnamed)'}, this party "
                 f"holds {expected.public_set}; every party must load the same data.public")
        uids = sorted(expected.labels)
        if sorted(int(u) for u in self.example_ids) != uids:
            fail(f"its {len(self.example_ids)} example ids are not the public set's {len(uids)}")
        if self.top_k != expected.top_k:
            fail(f"top-K is {self.top_k}, the run's fedmkt.top_k is {expected.top_k}")
        for n, uid in enumerate(self.example_ids):
            rows = self.rows(n)
            labels = expected.labels[int(uid)]
            if rows.stop - rows.start != len(labels):
                fail(f"example {int(uid)} has {rows.stop - rows.start} positions, its tokenization has "
                     f"{len(labels)}")
            ids, logp = self.topk_ids[rows], self.topk_logprobs[rows].astype(np.float64)
            hit = ids == labels[:, None]
            # -log p(label): exact where the label is listed, at least -(K-th log-prob) elsewhere.
            floor = np.where(hit.any(axis=1), -np.where(hit, logp, -np.inf).max(axis=1), -logp.min(axis=1))
            bound = float(floor.mean()) if len(floor) else 0.0
            if float(self.ce[n]) < bound * (1 - expected.ce_tolerance) - expected.ce_tolerance:
                fail(f"example {int(uid)} claims cross-entropy {float(self.ce[n]):.4f}, but its own top-K "
                     f"log-probs put it at {bound:.4f} or more")
        return self

    def to_bytes(self) -> bytes:
        meta = {"format": FORMAT, "version": str(VERSION), "sender": self.sender, "tokenizer": self.tokenizer,
                "vocab_size": str(self.vocab_size), "public_set": self.public_set}
        return save({
            "example_ids": np.ascontiguousarray(self.example_ids, dtype=np.int64),
            "ce": np.ascontiguousarray(self.ce, dtype=np.float32),
            "offsets": np.ascontiguousarray(self.offsets, dtype=np.int64),
            # Ids of vocabularies up to 65536 tokens fit in 2 bytes.
            "topk_ids": np.ascontiguousarray(self.topk_ids, dtype=np.uint16 if self.vocab_size <= 65536 else np.int32),
            "topk_logprobs": np.ascontiguousarray(self.topk_logprobs, dtype=np.float16),
        }, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes, max_bytes: int | None = None) -> "KnowledgePacket":
        """Decode and validate; any failure, whatever its kind, is a PacketError naming what is wrong."""
        if not isinstance(data, (bytes, bytearray)):
            raise PacketError(f"knowledge packet is {type(data).__name__}, not bytes")
        if max_bytes is not None and len(data) > max_bytes:
            raise PacketError(f"knowledge packet of {len(data)} bytes exceeds the limit of {max_bytes}")
        try:
            header_len = int.from_bytes(data[:8], "little")
            if len(data) < 8 or header_len > min(MAX_HEADER_BYTES, len(data) - 8):
                raise ValueError(f"header length {header_len} does not fit the {len(data)} bytes")
            header = json.loads(data[8:8 + header_len])
            if not isinstance(header, dict):
                raise ValueError(f"header is a JSON {type(header).__name__}, not an object")
            meta = header.get("__metadata__") or {}
            if not isinstance(meta, dict):
                raise ValueError("header metadata is not an object")
            arrays = load(bytes(data))
        except Exception as error:  # safetensors, JSON, recursion, Unicode: the bytes are not a packet
            raise PacketError(f"knowledge packet is corrupted or not a packet: {type(error).__name__}: "
                              f"{str(error)[:200]}") from None
        if meta.get("format") != FORMAT:
            raise PacketError(f"not a knowledge packet (format {meta.get('format')!r})")
        if meta.get("version") != str(VERSION):
            raise PacketError(f"knowledge packet version {meta.get('version')} is not supported (expected {VERSION})")
        missing = set(ARRAYS) - set(arrays)
        if missing:
            raise PacketError(f"knowledge packet lacks {sorted(missing)}")
        try:
            vocab_size = int(meta.get("vocab_size", ""))
        except ValueError:
            raise PacketError(f"knowledge packet has no valid vocab_size ({meta.get('vocab_size')!r})") from None
        packet = cls(sender=str(meta.get("sender", "?")), tokenizer=str(meta.get("tokenizer", "")),
                     vocab_size=vocab_size, public_set=str(meta.get("public_set", "")),
                     **{k: arrays[k] for k in ARRAYS})
        packet.validate()
        packet.topk_ids = packet.topk_ids.astype(np.int32)
        return packet
