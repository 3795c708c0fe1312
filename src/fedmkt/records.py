"""Typed records of a run: what metrics.json holds, read and written in one place.

The federation fills them, report/plots/experiment read them; nobody shares dict keys by convention.
`to_json` keeps the on-disk layout of metrics.json (older run folders and the committed grids load
with `from_json`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


PER_QUESTION = "per_question"  # a domain's score of each question, in the set's order (paired comparisons)
ANSWERS = "answers"  # a free-text domain's generated answers, in the set's order: written to the run folder's
# answers/ (federation/store.py), never into metrics.json
MAX_TEXT_CHARS = 200  # a name or a drop reason in a record: what a reader needs, whatever a peer sent


def bounded_text(value: object, limit: int = MAX_TEXT_CHARS) -> str:
    """Text from outside (a sender's name, an error about its packet) as one line of at most `limit`
    characters: control characters (newlines included) escaped, the rest cut and counted."""
    text = str(value)
    if len(text) > 4 * limit:  # escaping the whole of a 600 KB name would cost for nothing
        text = text[:4 * limit]
    text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    whole = len(str(value))
    if len(text) <= limit and whole <= 4 * limit:
        return text
    suffix = f"... ({whole} characters)"
    return text[:limit - len(suffix)] + suffix


def shown(value: object) -> str:
    """A quoted, bounded rendering of a name a peer chose."""
    return f"'{bounded_text(value, 64)}'"


@dataclass
class PartyScores:
    """One party's evaluation: metrics per domain ({"acc", "acc_norm", "n"} or {"rougeL", "exact_match", "ended", "n"},
    with PER_QUESTION: accuracy 0/1 or ROUGE-L of each question) and their means ("score": the mean of each
    domain's primary metric)."""

    domains: dict[str, dict[str, float]]
    mean: dict[str, float]
    own: dict[str, float] | None = None  # a client's own held-out set (clients.N.eval), outside the means

    @property
    def score(self) -> float:
        return self.mean["score"]

    def to_json(self) -> dict:
        return {**self.domains, "mean": self.mean, **({"own": self.own} if self.own is not None else {})}

    @classmethod
    def from_json(cls, data: dict) -> "PartyScores":
        return cls({k: v for k, v in data.items() if k not in ("mean", "own")}, data["mean"], data.get("own"))


Evaluation = dict[str, PartyScores]  # party name -> its scores


def _evaluation_json(evaluation: Evaluation) -> dict:
    return {name: scores.to_json() for name, scores in evaluation.items()}


def _evaluation_from(data: dict) -> Evaluation:
    return {name: PartyScores.from_json(scores) for name, scores in data.items()}


@dataclass
class Timing:
    """Round wall time against all parties' model compute (forward, backward, optimizer)."""

    wall_s: float
    model_compute_s: float
    overhead_ratio: float


@dataclass
class WireBytes:
    up_per_client: float
    down: float


@dataclass
class RoundRecord:
    """What one round did: losses, DualMinCE selection rates, who was dropped and why, cost, scores."""

    round: int
    private_loss: dict[str, float | None] = field(default_factory=dict)
    selection: dict[str, dict[str, float]] = field(default_factory=dict)  # receiver -> source -> fraction
    aligned_fraction: dict[str, dict[str, float]] | None = None  # receiver -> sender -> fraction; FedMKT only
    kd_loss: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)  # client -> reason
    timing: Timing | None = None
    bytes: WireBytes = field(default_factory=lambda: WireBytes(0.0, 0.0))
    evaluation: Evaluation = field(default_factory=dict)
    sampled: list[str] | None = None  # the clients this round asked (fedmkt.clients_per_round); None: every client
    privacy: dict[str, dict] = field(default_factory=dict)  # DP clients -> {epsilon spent so far, delta, stopped}

    def to_json(self) -> dict:
        out: dict = {"round": self.round, "private_loss": self.private_loss, "selection": self.selection}
        if self.sampled is not None:
            out["sampled"] = self.sampled
        if self.aligned_fraction is not None:
            out["aligned_fraction"] = self.aligned_fraction
        if self.privacy:
            out["privacy"] = self.privacy
        out.update({"kd_loss": self.kd_loss, "dropped": self.dropped})
        if self.timing is not None:
            out["timing"] = vars(self.timing)
        out["bytes"] = vars(self.bytes)
        out["evaluation"] = _evaluation_json(self.evaluation)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "RoundRecord":
        return cls(round=data["round"], private_loss=data.get("private_loss", {}), selection=data.get("selection", {}),
                   aligned_fraction=data.get("aligned_fraction"), kd_loss=data.get("kd_loss", {}),
                   dropped=data.get("dropped", {}),
                   timing=Timing(**data["timing"]) if "timing" in data else None,
                   bytes=WireBytes(**data["bytes"]) if "bytes" in data else WireBytes(0.0, 0.0),
                   evaluation=_evaluation_from(data.get("evaluation", {})), sampled=data.get("sampled"),
                   privacy=data.get("privacy", {}))


@dataclass
class SplitSizes:
    public: int
    private: dict[str, int]
    evaluation: dict[str, int]


@dataclass
class RunMetrics:
    """metrics.json: the resolved config (as saved), split sizes, zero-shot scores and one record a round."""

    config: dict
    split: SplitSizes
    zero_shot: Evaluation = field(default_factory=dict)
    rounds: list[RoundRecord] = field(default_factory=list)
    wall_s: float | None = None
    stopped: str | None = None  # why the run stopped before its last round (too few clients replied)
    question_ids: dict[str, list[int]] | None = None  # evaluation domain -> its questions' uids, in the order of
    # every PER_QUESTION list of the run (reports pair runs by these; None in runs written before they were kept)
    majority: PartyScores | None = None  # the public set's commonest label of each domain, answered every time

    @property
    def final(self) -> Evaluation:
        """Scores after the last round (empty before round 1)."""
        return self.rounds[-1].evaluation if self.rounds else {}

    def stages(self) -> list[tuple[int, Evaluation]]:
        """(round, evaluation) from zero-shot (round 0) to the last round, for the rounds evaluated
        (`fedmkt.evaluate_every`)."""
        return [(0, self.zero_shot)] + [(r.round, r.evaluation) for r in self.rounds if r.evaluation]

    def to_json(self) -> dict:
        out = {"config": self.config, "split": vars(self.split), "rounds": [r.to_json() for r in self.rounds],
               "zero_shot": _evaluation_json(self.zero_shot)}
        if self.wall_s is not None:
            out["wall_s"] = self.wall_s
        if self.stopped is not None:
            out["stopped"] = self.stopped
        if self.question_ids is not None:
            out["question_ids"] = self.question_ids
        if self.majority is not None:
            out["majority"] = self.majority.to_json()
        return out

    @classmethod
    def from_json(cls, data: dict) -> "RunMetrics":
        return cls(config=data["config"], split=SplitSizes(**data["split"]),
                   zero_shot=_evaluation_from(data.get("zero_shot", {})),
                   rounds=[RoundRecord.from_json(r) for r in data.get("rounds", [])], wall_s=data.get("wall_s"),
                   stopped=data.get("stopped"), question_ids=data.get("question_ids"),
                   majority=PartyScores.from_json(data["majority"]) if "majority" in data else None)
