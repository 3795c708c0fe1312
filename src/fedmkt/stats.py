"""Paired comparisons: two systems scored on the same questions, the difference with its uncertainty.

A difference of two accuracies measured on the same questions is judged from the per-question
differences (a paired design: the questions' own difficulty cancels). Its 95% interval comes from a
percentile bootstrap over questions (Efron & Tibshirani, 1993; as Koehn, 2004, for MT metrics), which
serves accuracy (0/1 per question) and ROUGE-L (a score per question) alike. A difference "is a result"
only when its interval excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmkt.records import PER_QUESTION

RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedDifference:
    """mean(b) - mean(a) over the same n questions, with a 95% bootstrap interval [low, high]."""

    difference: float
    low: float
    high: float
    n: int

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: b and a differ beyond what the questions' sampling explains."""
        return self.low > 0 or self.high < 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def text(self, digits: int = 3) -> str:
        return f"{self.difference:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired_difference(a, b, confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> PairedDifference:
    """The mean of b - a per question and its percentile bootstrap interval (questions resampled with
    replacement, fixed seed: the same inputs always give the same interval)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a paired comparison needs scores of the same questions: got {a.shape} and {b.shape}")
    if len(a) == 0:
        raise ValueError("a paired comparison needs at least one question")
    diff = b - a
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory for large sets
        stop = min(start + 1000, resamples)
        means[start:stop] = diff[rng.integers(0, len(diff), size=(stop - start, len(diff)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedDifference(float(diff.mean()), float(low), float(high), len(diff))


KINDS = {"acc": "accuracy", "rougeL": "ROUGE-L"}  # a domain's primary metric -> what a comparison reports


def _pooled(results: list[dict]) -> np.ndarray:
    """The per-question scores of several domain results, one after another."""
    return np.concatenate([np.asarray(r[PER_QUESTION], dtype=np.float64) for r in results])


def kind_scores(results: dict[str, dict], metric: str) -> tuple[float, tuple[float, float] | None]:
    """One party's result of one kind (accuracy over its multiple-choice domains, or ROUGE-L over the
    free-text ones): the mean over their questions and its 95% bootstrap interval (None without per-question
    scores: the mean of the domains' figures then)."""
    domains = [r for r in results.values() if metric in r]
    if domains and all(PER_QUESTION in r for r in domains):
        scores = _pooled(domains)
        spread = paired_difference(np.zeros_like(scores), scores)  # the mean's interval: its difference from 0
        return spread.difference, (spread.low, spread.high)
    return float(np.mean([r[metric] for r in domains])), None


@dataclass(frozen=True)
class ScoreComparison:
    """Two parties' results of one kind (accuracy over the multiple-choice domains, or ROUGE-L over the
    free-text ones) on the same questions: per-question means and their paired difference. `paired` is
    None where a record holds no per-question scores (runs written before they were kept); `approx` is
    then a normal-approximation interval for accuracies, unpaired, and None for ROUGE-L."""

    kind: str
    ours: float
    base: float
    n: int
    paired: PairedDifference | None
    approx: tuple[float, float] | None = None

    @property
    def interval(self) -> tuple[float, float] | None:
        return (self.paired.low, self.paired.high) if self.paired else self.approx

    def verdict(self) -> str:
        """holds / does not hold when the interval excludes 0; else within noise, bounded when the interval's
        half-width is at most 0.03, unresolved otherwise."""
        if self.interval is None:
            return "no interval"
        low, high = self.interval
        if low > 0:
            return "holds"
        if high < 0:
            return "does not hold"
        return "within noise, bounded" if (high - low) / 2 <= 0.03 else "within noise, unresolved"

    def text(self) -> str:
        diff = self.ours - self.base
        if self.interval is None:
            return f"{diff:+.3f}"
        low, high = self.interval
        return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]" + ("" if self.paired else " (unpaired approx.)")


def compare_scores(ours: dict[str, dict], base: dict[str, dict]) -> list[ScoreComparison]:
    """Each kind of result two parties share, over the domains both were scored on (`domain -> result`,
    as PartyScores.domains holds them). Per-question scores are concatenated over those domains."""
    out = []
    for metric, kind in KINDS.items():
        domains = [d for d in ours if d in base and metric in ours[d] and metric in base[d]]
        if not domains:
            continue
        n = int(sum(ours[d].get("n", 0) for d in domains))
        if all(PER_QUESTION in ours[d] and PER_QUESTION in base[d] for d in domains):
            a, b = _pooled([base[d] for d in domains]), _pooled([ours[d] for d in domains])
            out.append(ScoreComparison(kind, float(b.mean()), float(a.mean()), len(a), paired_difference(a, b)))
            continue
        mine, theirs = (float(np.mean([s[d][metric] for d in domains])) for s in (ours, base))
        approx = None
        if metric == "acc" and n:
            half = 1.96 * np.sqrt((mine * (1 - mine) + theirs * (1 - theirs)) / n)
            approx = (mine - theirs - half, mine - theirs + half)
        out.append(ScoreComparison(kind, mine, theirs, n, None, approx))
    return out
