"""KnowledgePacket: what a party shares about the public set, as flat arrays with a versioned binary form.

Per example: mean next-token cross-entropy on its answer. Per loss position (ragged per example,
through `offsets`): the top-K token ids and their log-probabilities. Only positions that carry loss are
shipped, never the prompt. A packet may carry the top-K of some examples only (`carried`), with every
example's cross-entropy: the two-step exchange sends the cross-entropies first (`restricted([])`), and
then the rows of the examples selection takes from that sender (`restricted(won)`). The binary form is
a safetensors buffer (no pickle: a packet from a peer cannot execute code) with a format version,
compressed with xz (LZMA2, CRC32-checked), which the ids and codes below compress well under
(benchmarks/bench_bytes.py measures each choice).

Log-probabilities go on the wire in 8 or 16 bits (`fedmkt.logprob_bits`). 16: float16. 8: each
position's largest log-prob in float16 and every entry as whole steps of 1/16 nat below it (uint8, up
to 255 steps: entries further down, under 1e-7 of the top one, are raised to that floor); the codes are
sent as differences along K, small numbers since top-K comes sorted. Rounding moves a log-prob by at
most 1/32 nat; `check` allows for it. The cross-entropies stay float32, so selection never changes.

A packet comes from another party, so nothing in it is trusted: `from_bytes` turns any failure to
decode into a PacketError, `validate` checks its internal consistency, and `check` holds it against
what the receiver knows independently (the round and phase it was sent for, the public set, each
example's tokenization, top-K, and the labels, which bound the cross-entropy a sender may claim).

Decoding is bounded before it is done: the safetensors header is inflated first, the size the header
declares is checked against `max_decoded` (`fedmkt.max_decoded_bytes`), and the rest is inflated with
that size as a hard cap. Decoding a packet then holds at most about DECODE_PEAK_FACTOR times its
decoded size (the decoded bytes, the arrays read from them, the float32 log-probs rebuilt from 8-bit
codes), beside the xz decoder's own memory (XZ_DECODER_BYTES at the default preset).
"""

from __future__ import annotations

import json
import lzma
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load, save

from fedmkt.records import bounded_text, shown

FORMAT = "fedmkt.knowledge"
VERSION = 4
READABLE = ("3", "4")  # 3: the round and phase a packet was sent for are in its header; 4: `carried`
ARRAYS = ("example_ids", "ce", "offsets", "topk_ids", "topk_logprobs")
CODED = ("topk_top", "topk_steps")  # 8-bit form of topk_logprobs
STEPS_PER_NAT = 16
MAX_HEADER_BYTES = 1 << 20  # a header describes a few arrays; anything larger is not ours
XZ_MAGIC = b"\xfd7zXZ\x00"
MAX_DECODED_BYTES = 1 << 30  # the default bound on a packet's decoded size (`fedmkt.max_decoded_bytes`)
DECODE_PEAK_FACTOR = 8  # decoding holds at most this many times the decoded size (a test measures it)
XZ_DECODER_BYTES = 10 << 20  # what the xz decoder itself holds (its dictionary: 8 MiB at preset 6)
MAX_VOCAB = 2**31 - 1  # ids are int32 once decoded: a larger vocabulary could not be indexed
LOGSUMEXP_SLACK = 1e-2  # a top-K is part of one distribution: its probabilities sum to <= 1, within rounding
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4, "I32": 4, "F32": 4,
               "U64": 8, "I64": 8, "F64": 8}


class PacketError(ValueError):
    """A knowledge packet that is malformed, corrupted or inconsistent; the message says what."""


@dataclass(frozen=True)
class Expected:
    """What a receiver knows of a sender's packet without trusting it: the public examples (ids, and per
    example the sender's answer token ids, whose count is the number of loss positions) and top-K."""

    labels: dict[int, np.ndarray]  # uid -> sender's token ids at its loss positions (what each predicts)
    top_k: int
    public_set: str = ""  # content hash of the receiver's public set ("" skips the check)
    round: int | None = None  # the round and phase the receiver asked for (None skips the check)
    phase: str | None = None
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
    round: int = 0  # the round and phase it was sent for (to_bytes writes them, check compares): a replayed
    phase: str = ""  # packet of another round or phase is refused
    carried: np.ndarray | None = None  # bool [N]: examples whose top-K rows it holds (None: every example)

    @property
    def top_k(self) -> int:
        return int(self.topk_ids.shape[1])

    def rows(self, n: int) -> slice:
        return slice(int(self.offsets[n]), int(self.offsets[n + 1]))

    def index(self) -> dict[int, int]:
        return {int(uid): n for n, uid in enumerate(self.example_ids)}

    def carries(self, n: int) -> bool:
        """Whether example n's top-K rows are in the packet (its cross-entropy always is)."""
        return self.carried is None or bool(self.carried[n])

    def restricted(self, uids) -> "KnowledgePacket":
        """The same packet with the top-K rows of `uids` only (of those it carries), every cross-entropy kept."""
        keep = np.isin(self.example_ids, np.asarray(list(uids), dtype=np.int64))
        if self.carried is not None:
            keep &= self.carried
        counts = np.diff(self.offsets) * keep
        rows = np.repeat(keep, np.diff(self.offsets))
        return KnowledgePacket(sender=self.sender, tokenizer=self.tokenizer, vocab_size=self.vocab_size,
                               example_ids=self.example_ids, ce=self.ce, offsets=np.r_[0, np.cumsum(counts)],
                               topk_ids=self.topk_ids[rows], topk_logprobs=self.topk_logprobs[rows],
                               public_set=self.public_set, logprob_error=self.logprob_error, round=self.round,
                               phase=self.phase, carried=keep)

    def validate(self) -> "KnowledgePacket":
        """Internal consistency: shapes, kinds, offsets, finite values, ids inside the vocabulary."""
        def fail(why: str):
            raise PacketError(f"knowledge packet from {shown(self.sender)}: {why}")

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
        if not isinstance(self.vocab_size, int) or not 1 <= self.vocab_size <= MAX_VOCAB:
            fail(f"vocab_size {self.vocab_size!r} is not an integer in [1, {MAX_VOCAB}]")
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
        if self.carried is not None:
            if not isinstance(self.carried, np.ndarray) or self.carried.shape != (n,) or self.carried.dtype != bool:
                fail("carried is not one flag per example")
            if np.any(np.diff(self.offsets)[~self.carried]):
                fail("an example marked as not carried has top-K rows")
        if not np.all(np.isfinite(self.ce)) or np.any(self.ce < 0):
            fail("cross-entropy values must be finite and non-negative (found NaN, inf or negative)")
        if not np.all(np.isfinite(self.topk_logprobs)) or np.any(self.topk_logprobs > 1e-2):
            fail("top-K log-probabilities must be finite and <= 0 (found NaN, inf or positive)")
        # Compared in the dtype they arrived in: a cast first could wrap 2**31 to a negative id.
        if self.topk_ids.size and (self.topk_ids.min() < 0 or self.topk_ids.max() >= self.vocab_size):
            fail(f"token ids outside the sender vocabulary [0, {self.vocab_size})")
        if len(self.topk_logprobs):
            logp = self.topk_logprobs.astype(np.float64)
            top = logp.max(axis=1)
            mass = top + np.log(np.exp(logp - top[:, None]).sum(axis=1))
            worst = int(mass.argmax())
            if mass[worst] > self.logprob_error + LOGSUMEXP_SLACK:
                fail(f"position {worst}'s top-K probabilities sum to {float(np.exp(mass[worst])):.3f}, more than 1: "
                     f"not part of a distribution")
        return self

    def check(self, expected: Expected) -> "KnowledgePacket":
        """Hold the packet against what the receiver knows: the public examples, each one's number of loss
        positions, top-K, and a lower bound on each example's cross-entropy from the packet's own
        log-probs (where the label is in the top-K its log-prob is known; elsewhere the K-th bounds it)."""
        def fail(why: str):
            raise PacketError(f"knowledge packet from {shown(self.sender)}: {why}")

        if expected.round is not None and (self.round, self.phase) != (expected.round, expected.phase):
            fail(f"it was sent for round {self.round} ({shown(self.phase)}), this is round {expected.round} "
                 f"({expected.phase}): a packet is valid for the exchange it was made for only")
        if expected.public_set and self.public_set != expected.public_set:
            computed_on = bounded_text(self.public_set, 64) or "(unnamed)"
            fail(f"public set mismatch: it was computed on public set {computed_on}, this party "
                 f"holds {expected.public_set}; every party must load the same data.public")
        uids = sorted(expected.labels)
        if sorted(int(u) for u in self.example_ids) != uids:
            fail(f"its {len(self.example_ids)} example ids are not the public set's {len(uids)}")
        if self.top_k != expected.top_k:
            fail(f"top-K is {self.top_k}, the run's fedmkt.top_k is {expected.top_k}")
        for n, uid in enumerate(self.example_ids):
            if not self.carries(n):  # its cross-entropy alone: bounded once its rows come (two-step exchange)
                continue
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

    def to_bytes(self, logprob_bits: int = 8, compress: bool = True, round_no: int | None = None,
                 phase: str | None = None) -> bytes:
        """The wire form, bound to the exchange it is sent in (`round_no`, `phase`; the packet's own by default)."""
        meta = {"format": FORMAT, "version": str(VERSION), "sender": self.sender, "tokenizer": self.tokenizer,
                "vocab_size": str(self.vocab_size), "public_set": self.public_set, "logprob_bits": str(logprob_bits),
                "round": str(self.round if round_no is None else round_no),
                "phase": self.phase if phase is None else phase}
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
        if self.carried is not None and not self.carried.all():
            arrays["carried"] = np.ascontiguousarray(self.carried, dtype=np.uint8)
        data = save(arrays, metadata=meta)
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32) if compress else data

    @classmethod
    def from_bytes(cls, data: bytes, max_bytes: int | None = None,
                   max_decoded: int = MAX_DECODED_BYTES) -> "KnowledgePacket":
        """Decode and validate; any failure, whatever its kind, is a PacketError naming what is wrong.
        `max_bytes` bounds the bytes received, `max_decoded` what they may decode to (checked from the
        header before the arrays are inflated)."""
        if not isinstance(data, (bytes, bytearray)):
            raise PacketError(f"knowledge packet is {type(data).__name__}, not bytes")
        if max_bytes is not None and len(data) > max_bytes:
            raise PacketError(f"knowledge packet of {len(data)} bytes exceeds the limit of {max_bytes}")
        data, meta = _BoundedReader(bytes(data), max_decoded).decoded()
        try:
            arrays = load(data)
        except Exception as error:  # safetensors, JSON, recursion, Unicode: the bytes are not a packet
            raise PacketError(f"knowledge packet is corrupted or not a packet: {type(error).__name__}: "
                              f"{str(error)[:200]}") from None
        del data
        if meta.get("format") != FORMAT:
            raise PacketError(f"not a knowledge packet (format {str(meta.get('format'))[:40]!r})")
        if meta.get("version") not in READABLE:
            raise PacketError(f"knowledge packet version {str(meta.get('version'))[:40]} is not supported (reads "
                              f"{', '.join(READABLE)})")
        logprob_error = 0.0
        if "topk_logprobs" not in arrays and set(CODED) <= set(arrays):
            arrays["topk_logprobs"], logprob_error = _from_steps(arrays.pop("topk_top"), arrays.pop("topk_steps")), 0.5 / STEPS_PER_NAT
        missing = set(ARRAYS) - set(arrays)
        if missing:
            raise PacketError(f"knowledge packet lacks {sorted(missing)}")
        carried = arrays.get("carried")
        if carried is not None:
            if carried.dtype != np.uint8 or carried.ndim != 1 or np.any(carried > 1):
                raise PacketError("knowledge packet has a malformed carried flag array")
            carried = carried.astype(bool)
        numbers = {}
        for key in ("vocab_size", "round"):
            try:
                numbers[key] = int(str(meta.get(key, ""))[:20])
            except ValueError:
                raise PacketError(f"knowledge packet has no valid {key} ({str(meta.get(key))[:40]!r})") from None
        packet = cls(sender=str(meta.get("sender", "?")), tokenizer=str(meta.get("tokenizer", "")),
                     vocab_size=numbers["vocab_size"], public_set=str(meta.get("public_set", "")),
                     logprob_error=logprob_error, round=numbers["round"], phase=str(meta.get("phase", "")),
                     carried=carried, **{k: arrays[k] for k in ARRAYS})
        packet.validate()
        packet.topk_ids = packet.topk_ids.astype(np.int32)  # safe: validate bounds them by vocab_size <= MAX_VOCAB
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
    del deltas
    out = steps.astype(np.float32)  # in place from here: one float32 array, not three
    del steps
    out *= -1.0 / STEPS_PER_NAT
    out += top.astype(np.float32)[:, None]
    return out


class _BoundedReader:
    """A packet's bytes, inflated (if xz) only as far as its safetensors header allows: first the 8-byte
    length and the header, then exactly the size the header declares, refused above `max_decoded`."""

    def __init__(self, data: bytes, max_decoded: int):
        self.data, self.max_decoded = data, max_decoded
        self.xz = lzma.LZMADecompressor(format=lzma.FORMAT_XZ) if data[:6] == XZ_MAGIC else None
        self.fed = False
        self.position = 0  # bytes read so far, of the decoded stream

    def _inflate(self, n: int) -> bytes:
        """Up to `n` more decoded bytes (fewer at the stream's end)."""
        try:
            chunk = self.xz.decompress(b"" if self.fed else self.data, max_length=n)
        except lzma.LZMAError as error:
            raise PacketError(f"knowledge packet is corrupted or not a packet: {error}") from None
        self.fed = True
        return chunk

    def _take(self, n: int) -> bytes:
        if self.xz is None:
            out = self.data[self.position:self.position + n]
        else:
            parts, got = [], 0
            while got < n and not self.xz.eof:
                chunk = self._inflate(n - got)
                if not chunk and self.xz.needs_input:
                    break
                parts.append(chunk)
                got += len(chunk)
            out = b"".join(parts)
        self.position += len(out)
        if len(out) < n:
            raise PacketError(f"knowledge packet is corrupted or not a packet: it ends after {self.position} "
                              f"decoded bytes, its header says {n - len(out)} more")
        return out

    def decoded(self) -> tuple[bytes, dict]:
        """The decoded bytes and the header's metadata."""
        head = self._take(8)
        header_len = int.from_bytes(head, "little")
        if header_len > MAX_HEADER_BYTES:
            raise PacketError(f"knowledge packet is corrupted or not a packet: header length {header_len} exceeds "
                              f"{MAX_HEADER_BYTES}")
        header = self._take(header_len)
        body, meta = _header_layout(header)
        total = 8 + header_len + body
        if total > self.max_decoded:
            raise PacketError(f"knowledge packet declares {total} decoded bytes, over the limit of {self.max_decoded} "
                              f"(fedmkt.max_decoded_bytes)")
        if self.xz is None:  # nothing to inflate: the bytes are the packet, if their length is the declared one
            if len(self.data) != total:
                raise PacketError(f"knowledge packet is corrupted or not a packet: {len(self.data)} bytes, its "
                                  f"header declares {total}")
            return self.data, meta
        out = head + header + self._take(body)
        extra = b"" if self.xz.eof else self._inflate(1)
        if extra or not self.xz.eof:
            raise PacketError("knowledge packet is corrupted or not a packet: its xz stream holds more than its "
                              "header declares, or is truncated")
        if self.xz.unused_data:
            raise PacketError("knowledge packet is corrupted or not a packet: bytes after its xz stream")
        return out, meta


def _header_layout(header: bytes) -> tuple[int, dict]:
    """From a safetensors header: the size of the data after it (from its dtypes and shapes) and its metadata."""
    try:
        parsed = json.loads(header)
        if not isinstance(parsed, dict):
            raise ValueError(f"header is a JSON {type(parsed).__name__}, not an object")
        meta = parsed.get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise ValueError("header metadata is not an object")
        end = 0
        for name, info in parsed.items():
            if name == "__metadata__":
                continue
            if not isinstance(info, dict) or info.get("dtype") not in DTYPE_BYTES:
                raise ValueError(f"array {name[:40]!r} has no known dtype")
            shape, (begin, stop) = info["shape"], info["data_offsets"]
            if not all(isinstance(v, int) and v >= 0 for v in (*shape, begin, stop)):
                raise ValueError(f"array {name[:40]!r} has a malformed shape or offsets")
            if stop - begin != DTYPE_BYTES[info["dtype"]] * int(np.prod(shape, dtype=object)):
                raise ValueError(f"array {name[:40]!r}: its offsets do not hold its shape")
            end = max(end, stop)
        return end, meta
    except Exception as error:  # JSON, recursion, missing keys, unpacking: not a packet's header
        raise PacketError(f"knowledge packet is corrupted or not a packet: {type(error).__name__}: "
                          f"{str(error)[:200]}") from None
