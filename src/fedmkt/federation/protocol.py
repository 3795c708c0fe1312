"""What the server asks of clients and what they answer, whatever carries it: phases, requests, replies.

Each phase's value is also its Flower message type ("<category>.<action>"), so the Flower apps map
phases to messages here, in one place. Requests and replies cross as flat dicts of str / int / float
/ bytes (what a Flower ConfigRecord carries; the local runner sends the same dicts); `to_wire` and
`from_wire` are the only code that knows that layout, and `from_wire` checks every field a reply must
hold, so a malformed reply fails in one place, as a `ClientFailure` that drops its sender.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum

import torch
from safetensors.torch import load, save

from fedmkt.records import ANSWERS, PER_QUESTION


class Phase(str, Enum):
    """The requests of a round; the value is the Flower message type."""

    SHARE = "train.share"  # (1)+(2): private SFT, then knowledge on the public set -> packet bytes
    PRIVATE = "train.private"  # private SFT only (standalone and FedAvg baselines)
    DISTILL = "train.distill"  # (7): absorb the LLM's packet -> statistics
    EVALUATE = "evaluate"  # scores on the evaluation sets
    GET_ADAPTER = "query.adapter"  # the LoRA adapter (FedAvg)
    SET_ADAPTER = "train.adapter"  # replace the LoRA adapter (FedAvg result)

    def __str__(self) -> str:
        return self.value


# "1" in a process that serves every message of its node (resident.py): there the ClientApp (flower.py) may
# build a client ahead of its first phase. Here, below both, because neither app imports the other.
RESIDENT_ENV = "FEDMKT_RESIDENT_CLIENTAPP"
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

    def to_wire(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_wire(cls, data: dict) -> "Request":
        return cls(round=int(data.get("round", 0)), packet=data.get("packet"),
                   tokenizer=None if data.get("tokenizer") is None else str(data["tokenizer"]),
                   adapter=data.get("adapter"),
                   public_set=None if data.get("public_set") is None else str(data["public_set"]))


def _field(data: dict, key: str, kind: type):
    if key not in data:
        raise ClientFailure(f"malformed reply: no '{key}'")
    value = data[key]
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind):
        raise ClientFailure(f"malformed reply: '{key}' is {type(value).__name__}, not {kind.__name__}")
    return value


def _prefixed(data: dict, prefix: str) -> dict[str, float]:
    return {k[len(prefix) + 1:]: _field(data, k, float) for k in data if k.startswith(prefix + ".")}


@dataclass
class Reply:
    """Every reply says how long the client's model computed for it."""

    compute_s: float = 0.0

    def _wire(self) -> dict:
        return {}

    def to_wire(self) -> dict:
        return {**self._wire(), "compute_s": float(self.compute_s)}

    @classmethod
    def _parse(cls, data: dict, compute_s: float) -> "Reply":
        return cls(compute_s=compute_s)

    @classmethod
    def from_wire(cls, data: dict) -> "Reply":
        if not isinstance(data, dict):
            raise ClientFailure(f"malformed reply: {type(data).__name__}, not a record")
        return cls._parse(data, _field(data, "compute_s", float) if "compute_s" in data else 0.0)


@dataclass
class ShareReply(Reply):
    packet: bytes = b""
    private_loss: float = float("nan")

    def _wire(self) -> dict:
        return {"packet": self.packet, "private_loss": float(self.private_loss)}

    @classmethod
    def _parse(cls, data, compute_s):
        return cls(compute_s, _field(data, "packet", bytes), _field(data, "private_loss", float))


@dataclass
class PrivateReply(Reply):
    private_loss: float = float("nan")

    def _wire(self) -> dict:
        return {"private_loss": float(self.private_loss)}

    @classmethod
    def _parse(cls, data, compute_s):
        return cls(compute_s, _field(data, "private_loss", float))


@dataclass
class DistillReply(Reply):
    loss: float = float("nan")
    selected: dict[str, float] = field(default_factory=dict)  # source -> fraction of public examples
    aligned: dict[str, float] = field(default_factory=dict)  # sender -> fraction of positions aligned

    def _wire(self) -> dict:
        return {"loss": float(self.loss), **{f"selected.{k}": float(v) for k, v in self.selected.items()},
                **{f"aligned.{k}": float(v) for k, v in self.aligned.items()}}

    @classmethod
    def _parse(cls, data, compute_s):
        return cls(compute_s, _field(data, "loss", float), _prefixed(data, "selected"), _prefixed(data, "aligned"))


@dataclass
class EvaluateReply(Reply):
    scores: dict[str, dict] = field(default_factory=dict)  # domain -> metric -> value (PER_QUESTION: a list of
    # scores, ANSWERS: of generated answers)

    def _wire(self) -> dict:
        def wire(metric: str, value):
            if metric == ANSWERS:
                return [str(v) for v in value]
            return [float(v) for v in value] if metric == PER_QUESTION else float(value)

        return {f"eval.{domain}.{metric}": wire(metric, value)
                for domain, result in self.scores.items() for metric, value in result.items()}

    @classmethod
    def _parse(cls, data, compute_s):
        scores: dict[str, dict] = {}
        for key in [k for k in data if k.startswith("eval.")]:
            domain, dot, metric = key[len("eval."):].rpartition(".")
            if not dot:
                raise ClientFailure(f"malformed reply: evaluation key '{key}' names no metric")
            if metric == ANSWERS:
                value = _answers(data, key)
            else:
                value = _per_question(data, key) if metric == PER_QUESTION else _field(data, key, float)
            if metric == "n":  # a count (wire numbers are floats): an int again, as the server's own results
                if value != int(value) or value < 0:
                    raise ClientFailure(f"malformed reply: '{key}' = {value} is not a count of questions")
                value = int(value)
            scores.setdefault(domain, {})[metric] = value
        for domain, result in scores.items():
            for listed, verb in ((PER_QUESTION, "scores"), (ANSWERS, "answers")):
                if listed in result and len(result[listed]) != result.get("n"):
                    raise ClientFailure(f"malformed reply: eval.{domain} {verb} {len(result[listed])} questions "
                                        f"but says n={result.get('n')}")
        return cls(compute_s, scores)


MAX_ANSWER_CHARS = 8192  # far above what evaluation generates (48 new tokens): a longer one is not an answer


def _answers(data: dict, key: str) -> list[str]:
    value = _field(data, key, list)
    if not all(isinstance(v, str) and len(v) <= MAX_ANSWER_CHARS for v in value):
        raise ClientFailure(f"malformed reply: '{key}' holds something other than answers of at most "
                            f"{MAX_ANSWER_CHARS} characters")
    return value


def _per_question(data: dict, key: str) -> list[float]:
    value = _field(data, key, list)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in value):
        raise ClientFailure(f"malformed reply: '{key}' holds something other than scores in [0, 1]")
    return [float(v) for v in value]


@dataclass
class AdapterReply(Reply):
    adapter: bytes = b""

    def _wire(self) -> dict:
        return {"adapter": self.adapter}

    @classmethod
    def _parse(cls, data, compute_s):
        return cls(compute_s, _field(data, "adapter", bytes))


REPLIES: dict[Phase, type[Reply]] = {Phase.SHARE: ShareReply, Phase.PRIVATE: PrivateReply,
                                     Phase.DISTILL: DistillReply, Phase.EVALUATE: EvaluateReply,
                                     Phase.GET_ADAPTER: AdapterReply, Phase.SET_ADAPTER: Reply}
