"""KnowledgePacket: what a party shares about the public set, as flat arrays with a versioned binary form.

Per example: mean next-token cross-entropy on its answer. Per loss position (ragged per example,
through `offsets`): the top-K token ids and their log-probabilities. Only positions that carry loss are
shipped, never the prompt. The binary form is a safetensors buffer (no pickle: a packet from a peer
cannot execute code) with a format version, compressed with xz (LZMA2, CRC32-checked), which the
ids and codes below compress well under (benchmarks/bench_bytes.py measures each choice).

Log-probabilities go on the wire in 8 or 16 bits (`fedmkt.logprob_bits`). 16: float16. 8: each
position's largest log-prob in float16 and every entry as whole steps of 1/16 nat below it (uint8, up
to 255 steps: entries further down, under 1e-7 of the top one, are raised to that floor); the codes are
sent as differences along K, small numbers since top-K comes sorted. Rounding moves a log-prob by at
most 1/32 nat; `check` allows for it. The cross-entropies stay float32, so selection never changes.

A packet comes from another party, so nothing in it is trusted: `from_bytes` turns any failure to
decode into a PacketError, `validate` checks its internal consistency, and `check` holds it against
what the receiver knows independently (the public set, each example's tokenization, top-K, and the
labels, which bound the cross-entropy a sender may claim).
"""

from __future__ import annotations

import json
import lzma
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load, save

FORMAT = "fedmkt.knowledge"
VERSION = 2
READABLE = ("1", "2")  # version 1: float16 log-probs, no compression
ARRAYS = ("example_ids", "ce", "offsets", "topk_ids", "topk_logprobs")
CODED = ("topk_top", "topk_steps")  # 8-bit form of topk_logprobs
STEPS_PER_NAT = 16
MAX_HEADER_BYTES = 1 << 20  # a header describes a few arrays; anything larger is not ours
XZ_MAGIC = b"\xfd7zXZ\x00"
MAX_EXPANSION = 64  # a packet decompresses to at most this many times its size (packets shrink ~2x)


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
    topk_logprobs: np.ndarray  # float [P, K]
    public_set: str = ""  # content hash of the public set the sender computed it on
    logprob_error: float = 0.0  # how far rounding on the wire may have moved a log-prob (8 bits: 1/32 nat)

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
            bound = float(floor.mean()) - self.logprob_error if len(floor) else 0.0
            if float(self.ce[n]) < bound * (1 - expected.ce_tolerance) - expected.ce_tolerance:
                fail(f"example {int(uid)} claims cross-entropy {float(self.ce[n]):.4f}, but its own top-K "
                     f"log-probs put it at {bound:.4f} or more")
        return self

    def to_bytes(self, logprob_bits: int = 8, compress: bool = True) -> bytes:
        meta = {"format": FORMAT, "version": str(VERSION), "sender": self.sender, "tokenizer": self.tokenizer,
                "vocab_size": str(self.vocab_size), "public_set": self.public_set, "logprob_bits": str(logprob_bits)}
        arrays = {
            "example_ids": np.ascontiguousarray(self.example_ids, dtype=np.int64),
            "ce": np.ascontiguousarray(self.ce, dtype=np.float32),
            "offsets": np.ascontiguousarray(self.offsets, dtype=np.int64),
            # Ids of vocabularies up to 65536 tokens fit in 2 bytes.
            "topk_ids": np.ascontiguousarray(self.topk_ids, dtype=np.uint16 if self.vocab_size <= 65536 else np.int32),
        }
        if logprob_bits == 16:
            arrays["topk_logprobs"] = np.ascontiguousarray(self.topk_logprobs, dtype=np.float16)
        elif logprob_bits == 8:
            arrays.update(_to_steps(self.topk_logprobs))
        else:
            raise ValueError(f"logprob_bits must be 8 or 16, not {logprob_bits}")
        data = save(arrays, metadata=meta)
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32) if compress else data

    @classmethod
    def from_bytes(cls, data: bytes, max_bytes: int | None = None) -> "KnowledgePacket":
        """Decode and validate; any failure, whatever its kind, is a PacketError naming what is wrong."""
        if not isinstance(data, (bytes, bytearray)):
            raise PacketError(f"knowledge packet is {type(data).__name__}, not bytes")
        if max_bytes is not None and len(data) > max_bytes:
            raise PacketError(f"knowledge packet of {len(data)} bytes exceeds the limit of {max_bytes}")
        if bytes(data[:6]) == XZ_MAGIC:
            data = _decompress(bytes(data))
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
        if meta.get("version") not in READABLE:
            raise PacketError(f"knowledge packet version {meta.get('version')} is not supported (reads "
                              f"{', '.join(READABLE)})")
        logprob_error = 0.0
        if "topk_logprobs" not in arrays and set(CODED) <= set(arrays):
            arrays["topk_logprobs"], logprob_error = _from_steps(arrays["topk_top"], arrays["topk_steps"]), 0.5 / STEPS_PER_NAT
        missing = set(ARRAYS) - set(arrays)
        if missing:
            raise PacketError(f"knowledge packet lacks {sorted(missing)}")
        try:
            vocab_size = int(meta.get("vocab_size", ""))
        except ValueError:
            raise PacketError(f"knowledge packet has no valid vocab_size ({meta.get('vocab_size')!r})") from None
        packet = cls(sender=str(meta.get("sender", "?")), tokenizer=str(meta.get("tokenizer", "")),
                     vocab_size=vocab_size, public_set=str(meta.get("public_set", "")), logprob_error=logprob_error,
                     **{k: arrays[k] for k in ARRAYS})
        packet.validate()
        packet.topk_ids = packet.topk_ids.astype(np.int32)
        return packet


def _to_steps(logprobs: np.ndarray) -> dict[str, np.ndarray]:
    """8-bit form: each row's top log-prob (float16) and every entry's whole 1/16-nat steps below it, sent
    as differences along the row (mod 256, so any order decodes; sorted rows give small numbers)."""
    logprobs = np.asarray(logprobs, dtype=np.float32)
    top = logprobs.max(axis=1, keepdims=True).astype(np.float16)  # NaN stays NaN: the receiver refuses it
    steps = np.clip(np.nan_to_num(np.rint((top.astype(np.float32) - logprobs) * STEPS_PER_NAT)), 0, 255).astype(np.uint8)
    deltas = np.diff(steps, axis=1, prepend=np.zeros((len(steps), 1), np.uint8))  # uint8 arithmetic wraps
    return {"topk_top": np.ascontiguousarray(top[:, 0]), "topk_steps": np.ascontiguousarray(deltas)}


def _from_steps(top: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    if top.ndim != 1 or deltas.ndim != 2 or len(top) != len(deltas) or deltas.dtype != np.uint8:
        raise PacketError(f"knowledge packet has malformed 8-bit log-probs (top {top.shape}, steps "
                          f"{deltas.shape} {deltas.dtype})")
    steps = np.cumsum(deltas, axis=1, dtype=np.uint8)  # wraps as the encoder did
    return top.astype(np.float32)[:, None] - steps.astype(np.float32) / STEPS_PER_NAT


def _decompress(data: bytes) -> bytes:
    limit = MAX_EXPANSION * len(data) + (1 << 20)
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        out = decompressor.decompress(data, max_length=limit)
    except lzma.LZMAError as error:
        raise PacketError(f"knowledge packet is corrupted or not a packet: {error}") from None
    if not decompressor.eof:
        raise PacketError(f"knowledge packet is corrupted or not a packet: its xz stream is truncated or expands "
                          f"past {limit} bytes")
    if decompressor.unused_data:
        raise PacketError("knowledge packet is corrupted or not a packet: bytes after its xz stream")
    return out
