"""What the server asks of clients and what they answer, whatever carries it: phases, requests, replies.

Each phase's value is also its Flower message type ("<category>.<action>"), so the Flower apps map
phases to messages here, in one place. Requests and replies cross as flat dicts of str / int / float
/ bytes (what a Flower ConfigRecord carries; the local runner sends the same dicts); `to_wire` and
`from_wire` are the only code that knows that layout. Each reply field declares its wire kind (Number,
Blob, Fractions, Scores), which writes it and checks its value where it enters (finite, in range, names
that are names), and every reply names the phase it answers, so a malformed reply fails in one place,
as a `ClientFailure` that drops its sender.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from enum import Enum

import numpy as np
import torch
from safetensors.torch import load, save

from fedmkt.config import NAME_PATTERN
from fedmkt.records import ANSWERS, PER_QUESTION


class Phase(str, Enum):
    """The requests of a round; the value is the Flower message type."""

    SHARE = "train.share"  # (1)+(2): private SFT, then knowledge on the public set -> packet bytes (two-step
    # exchange: its cross-entropies only)
    ROWS = "query.rows"  # two-step exchange, step 2: the top-K rows of the examples selection took from it
    PRIVATE = "train.private"  # private SFT only (standalone and FedAvg baselines)
    DISTILL = "train.distill"  # (7): absorb the LLM's packet -> statistics
    EVALUATE = "evaluate"  # scores on the evaluation sets
    GET_ADAPTER = "query.adapter"  # the LoRA adapter (FedAvg)
    SET_ADAPTER = "train.adapter"  # replace the LoRA adapter (FedAvg result)

    def __str__(self) -> str:
        return self.value


SERVER = "server"  # the server party's name: the sender of the knowledge sent down
OWN = "own"  # evaluation key of a client's own held-out set (clients.N.eval), beside the server's sets


class ClientFailure(RuntimeError):
    """A client that errored, timed out or sent something unusable in a phase."""


def adapter_to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    return save({k: v.contiguous() for k, v in state.items()})


def adapter_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    return load(data)


@dataclass
class Request:
    """What the server sends with a phase: the round, and what that phase needs."""

    round: int
    packet: bytes | None = None  # DISTILL: the LLM's knowledge packet
    tokenizer: str | None = None  # DISTILL: the LLM's model source, whose tokenizer the packet uses
    adapter: bytes | None = None  # SET_ADAPTER: safetensors bytes
    public_set: str | None = None  # content hash of the server's public set: a client holding another refuses
    uids: bytes | None = None  # ROWS: the public examples whose rows are asked for (uids_to_wire)

    def to_wire(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_wire(cls, data: dict) -> "Request":
        return cls(round=int(data.get("round", 0)), packet=data.get("packet"),
                   tokenizer=None if data.get("tokenizer") is None else str(data["tokenizer"]),
                   adapter=data.get("adapter"),
                   public_set=None if data.get("public_set") is None else str(data["public_set"]),
                   uids=data.get("uids"))


def uids_to_wire(uids: list[int]) -> bytes:
    return np.asarray(uids, dtype="<i8").tobytes()


def uids_from_wire(data) -> list[int]:
    """Example ids as sent (int64 little-endian); ClientFailure when they are not."""
    if not isinstance(data, bytes) or len(data) % 8:
        raise ClientFailure(f"the example ids asked for are not int64 bytes ({type(data).__name__})")
    return [int(u) for u in np.frombuffer(data, dtype="<i8")]


# -- replies: each field says how it crosses and what values it may hold --------------------------------
WIRE = "wire"  # a reply field's metadata key: its wire kind (Number, Blob, Fractions, Scores)
SCORE_METRICS = ("acc", "acc_norm", "rougeL", "exact_match", "ended")  # each a share of questions, in [0, 1]
PRIMARY_METRICS = ("acc", "rougeL")  # every domain's result holds one of these
MAX_ANSWER_CHARS = 8192  # far above what evaluation generates (48 new tokens): a longer one is not an answer


def _refuse(why: str) -> ClientFailure:
    return ClientFailure(f"malformed reply: {why}")


def _key(key: str) -> str:
    return f"'{key[:80]}'" + ("..." if len(key) > 80 else "")


def _present(data: dict, key: str):
    if key not in data:
        raise _refuse(f"no {_key(key)}")
    return data[key]


def _number(data: dict, key: str, low: float, high: float, nan_ok: bool) -> float:
    value = _present(data, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(f"{_key(key)} is {type(value).__name__}, not a number")
    value = float(value)
    if value != value:
        if nan_ok:
            return value
        raise _refuse(f"{_key(key)} is NaN")
    if not (math.isfinite(value) and low <= value <= high):
        raise _refuse(f"{_key(key)} = {value} is outside [{low}, {high}] (finite)")
    return value


def _name(key: str, name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):  # as the config's party names, and "self"
        raise _refuse(f"{_key(key)} does not end in a party or set name")
    return name


@dataclass(frozen=True)
class Number:
    """A float in [low, high]; NaN where it may be unmeasured (a loss with nothing to train on)."""

    low: float = 0.0
    high: float = math.inf
    nan_ok: bool = False

    def dump(self, name: str, value) -> dict:
        return {name: float(value)}

    def load(self, name: str, data: dict) -> float:
        return _number(data, name, self.low, self.high, self.nan_ok)


@dataclass(frozen=True)
class Flag:
    """A yes/no, as 0 or 1."""

    def dump(self, name: str, value) -> dict:
        return {name: int(bool(value))}

    def load(self, name: str, data: dict) -> bool:
        value = _present(data, name)
        if isinstance(value, bool) or value not in (0, 1):
            raise _refuse(f"{_key(name)} is {value!r:.40}, not 0 or 1")
        return bool(value)


@dataclass(frozen=True)
class Blob:
    """Bytes (a knowledge packet, an adapter), checked by whoever decodes them."""

    def dump(self, name: str, value) -> dict:
        return {name: value}

    def load(self, name: str, data: dict) -> bytes:
        value = _present(data, name)
        if not isinstance(value, bytes):
            raise _refuse(f"{_key(name)} is {type(value).__name__}, not bytes")
        return value


@dataclass(frozen=True)
class Fractions:
    """{name: fraction in [0, 1]} as `<field>.<name>` keys (name: a party, or "self")."""

    def dump(self, name: str, value: dict) -> dict:
        return {f"{name}.{k}": float(v) for k, v in value.items()}

    def load(self, name: str, data: dict) -> dict[str, float]:
        prefix = name + "."
        return {_name(k, k[len(prefix):]): _number(data, k, 0.0, 1.0, False) for k in data if k.startswith(prefix)}


@dataclass(frozen=True)
class Scores:
    """{domain: {metric: value}} as `eval.<domain>.<metric>` keys: shares in [0, 1], a count `n`, and per
    question lists (PER_QUESTION: scores in [0, 1]; ANSWERS: texts) of n items. Which domains must be there
    is the coordinator's to check: it knows what it asked."""

    def dump(self, name: str, value: dict) -> dict:
        def wire(metric: str, result):
            if metric == ANSWERS:
                return [str(v) for v in result]
            return [float(v) for v in result] if metric == PER_QUESTION else float(result)

        return {f"eval.{domain}.{metric}": wire(metric, result)
                for domain, results in value.items() for metric, result in results.items()}

    def load(self, name: str, data: dict) -> dict[str, dict]:
        scores: dict[str, dict] = {}
        for key in [k for k in data if k.startswith("eval.")]:
            domain, dot, metric = key[len("eval."):].rpartition(".")
            if not dot:
                raise _refuse(f"evaluation key {_key(key)} names no metric")
            if metric == ANSWERS:
                value = _answers(data, key)
            elif metric == PER_QUESTION:
                value = _per_question(data, key)
            elif metric == "n":  # a count (wire numbers are floats): an int again, as the server's own results
                value = _number(data, key, 0.0, 2.0**31, False)
                if value != int(value):
                    raise _refuse(f"{_key(key)} = {value} is not a count of questions")
                value = int(value)
            elif metric in SCORE_METRICS:
                value = _number(data, key, 0.0, 1.0, False)
            else:
                raise _refuse(f"{_key(key)}: no metric of that name ({', '.join(SCORE_METRICS)}, n, "
                              f"{PER_QUESTION}, {ANSWERS})")
            scores.setdefault(domain, {})[metric] = value
        for domain, result in scores.items():
            for listed, verb in ((PER_QUESTION, "scores"), (ANSWERS, "answers")):
                if listed in result and len(result[listed]) != result.get("n"):
                    raise _refuse(f"eval.{domain} {verb} {len(result[listed])} questions but says n={result.get('n')}")
            if "n" not in result or not any(m in result for m in PRIMARY_METRICS):
                raise _refuse(f"eval.{domain} lacks its count n or a primary metric ({' or '.join(PRIMARY_METRICS)})")
        return scores


def wire_field(kind, default=None, default_factory=None):
    """A reply field and how it crosses: to_wire and from_wire go through every field's kind, so a field
    added without one fails at once (KeyError 'wire'), never crossing unchecked."""
    if default_factory is not None:
        return field(default_factory=default_factory, metadata={WIRE: kind})
    return field(default=default, metadata={WIRE: kind})


@dataclass
class Reply:
    """Every reply says how long the client's model computed for it."""

    compute_s: float = wire_field(Number(), 0.0)

    def to_wire(self) -> dict:
        out: dict = {}
        for f in fields(self):
            out.update(f.metadata[WIRE].dump(f.name, getattr(self, f.name)))
        return out

    @classmethod
    def from_wire(cls, data: dict) -> "Reply":
        if not isinstance(data, dict):
            raise _refuse(f"{type(data).__name__}, not a record")
        return cls(**{f.name: f.metadata[WIRE].load(f.name, data) for f in fields(cls)})


LOSS = Number(nan_ok=True)  # NaN: nothing was trained (no private data)


@dataclass
class PrivateReply(Reply):
    """What private fine-tuning (step 1) reports. A DP client sends no loss (a loss on its private rows is
    not private) but what its budget has spent: epsilon so far at its delta, and whether it stopped."""

    private_loss: float = wire_field(LOSS, float("nan"))
    epsilon: float = wire_field(Number(nan_ok=True), float("nan"))  # NaN: no DP
    delta: float = wire_field(Number(0.0, 1.0, nan_ok=True), float("nan"))
    budget_stop: bool = wire_field(Flag(), False)  # its next round would exceed its target: it did not train


@dataclass
class ShareReply(PrivateReply):
    packet: bytes = wire_field(Blob(), b"")


@dataclass
class RowsReply(Reply):
    packet: bytes = wire_field(Blob(), b"")


@dataclass
class DistillReply(Reply):
    loss: float = wire_field(Number(), float("nan"))  # a client always distills on the public set: never NaN
    selected: dict[str, float] = wire_field(Fractions(), default_factory=dict)  # source -> share of public examples
    aligned: dict[str, float] = wire_field(Fractions(), default_factory=dict)  # sender -> share of positions aligned


@dataclass
class EvaluateReply(Reply):
    scores: dict[str, dict] = wire_field(Scores(), default_factory=dict)  # domain -> metric -> value (PER_QUESTION:
    # a list of scores, ANSWERS: of generated answers)


def _listed(data: dict, key: str) -> list:
    if not isinstance(data[key], list):
        raise _refuse(f"{_key(key)} is {type(data[key]).__name__}, not a list")
    return data[key]


def _answers(data: dict, key: str) -> list[str]:
    value = _listed(data, key)
    if not all(isinstance(v, str) and len(v) <= MAX_ANSWER_CHARS for v in value):
        raise _refuse(f"{_key(key)} holds something other than answers of at most {MAX_ANSWER_CHARS} characters")
    return value


def _per_question(data: dict, key: str) -> list[float]:
    value = _listed(data, key)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in value):
        raise _refuse(f"{_key(key)} holds something other than scores in [0, 1]")
    return [float(v) for v in value]


@dataclass
class AdapterReply(Reply):
    adapter: bytes = wire_field(Blob(), b"")


REPLIES: dict[Phase, type[Reply]] = {Phase.SHARE: ShareReply, Phase.ROWS: RowsReply, Phase.PRIVATE: PrivateReply,
                                     Phase.DISTILL: DistillReply, Phase.EVALUATE: EvaluateReply,
                                     Phase.GET_ADAPTER: AdapterReply, Phase.SET_ADAPTER: Reply}


PHASE_KEY = "phase"  # every reply names the phase it answers: one for another is refused


def reply_to_wire(phase: Phase, reply: Reply) -> dict:
    return {**reply.to_wire(), PHASE_KEY: phase.value}


def reply_from_wire(phase: Phase, data) -> Reply:
    """A reply to `phase`, every field checked (ClientFailure naming the first that is wrong)."""
    if isinstance(data, dict) and data.get(PHASE_KEY) != phase.value:
        raise _refuse(f"it answers {_key(str(data.get(PHASE_KEY)))}, not {phase.value}")
    return REPLIES[phase].from_wire(data)
