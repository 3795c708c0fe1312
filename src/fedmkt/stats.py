"""Paired comparisons: two systems scored on the same questions, the difference with its uncertainty.

A difference of two accuracies measured on the same questions is judged from the per-question
differences (a paired design: the questions' own difficulty cancels). Its 95% interval comes from a
percentile bootstrap over questions (Efron & Tibshirani, 1993; as Koehn, 2004, for MT metrics), which
serves accuracy (0/1 per question) and ROUGE-L (a score per question) alike. A difference "is a result"
only when its interval excludes 0.

Across seeds (each seed draws its own split and initialisation, so its own questions), the interval comes
from a two-level bootstrap: resample the seeds with replacement, then the questions within each drawn seed;
the statistic is the mean over the drawn seeds of their mean per-question difference (each seed weighs the
same). It covers run-to-run spread as well as the questions' sampling (Davison & Hinkley, 1997, sec. 3.8, on
resampling hierarchical data). With few seeds the seed level is coarse (3 seeds: 10 distinct draws), which
widens rather than narrows the interval.

Equivalence is judged by two one-sided tests (TOST; Schuirmann, 1987) against a margin fixed before the
run (a grid's `equivalence_margin`): the difference is "equivalent within +-margin" at the 5% level when
the 90% interval lies inside (-margin, +margin). Verdicts: higher / lower (the 95% interval excludes 0),
equivalent within +-margin, inconclusive (neither); without a margin, "within noise".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmkt.records import PER_QUESTION

RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedDifference:
    """mean(b) - mean(a) over n paired questions (from `seeds` seeds), with its 95% bootstrap interval
    [low, high] and the 90% one [low90, high90] that the equivalence test reads."""

    difference: float
    low: float
    high: float
    n: int
    low90: float = 0.0
    high90: float = 0.0
    seeds: int = 1

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: b and a differ beyond what the questions' sampling explains."""
        return self.low > 0 or self.high < 0

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def equivalent(self, margin: float) -> bool:
        """TOST at the 5% level: the 90% interval lies inside (-margin, +margin)."""
        return -margin < self.low90 and self.high90 < margin

    def verdict(self, margin: float | None = None) -> str:
        if self.low > 0:
            return "higher"
        if self.high < 0:
            return "lower"
        if margin is None:
            return "within noise"
        return f"equivalent within ±{margin:g}" if self.equivalent(margin) else "inconclusive"

    def text(self, digits: int = 3) -> str:
        return f"{self.difference:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def _resampled_means(groups: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of the per-question differences: over questions for one group; for several (seeds),
    seeds drawn with replacement, then questions within each, the drawn seeds' means averaged."""
    if len(groups) == 1:
        diff = groups[0]
        means = np.empty(resamples)
        for start in range(0, resamples, 1000):  # bounded memory for large sets
            stop = min(start + 1000, resamples)
            means[start:stop] = diff[rng.integers(0, len(diff), size=(stop - start, len(diff)))].mean(axis=1)
        return means
    means = np.empty(resamples)
    for i in range(resamples):
        drawn = rng.integers(0, len(groups), size=len(groups))
        means[i] = np.mean([groups[g][rng.integers(0, len(groups[g]), size=len(groups[g]))].mean() for g in drawn])
    return means


def paired_difference(a, b, confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> PairedDifference:
    """The mean of b - a per question and its percentile bootstrap interval (questions resampled with
    replacement, fixed seed: the same inputs always give the same interval)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a paired comparison needs scores of the same questions: got {a.shape} and {b.shape}")
    return seeded_difference([(a, b)], confidence, resamples, seed)


def seeded_difference(pairs: list[tuple[np.ndarray, np.ndarray]], confidence: float = 0.95,
                      resamples: int = RESAMPLES, seed: int = 0) -> PairedDifference:
    """b - a over several seeds' paired questions (one (a, b) pair of per-question score arrays a seed): the
    mean of the seeds' mean differences, with the two-level bootstrap's intervals (one seed: over questions)."""
    groups = [np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64) for a, b in pairs]
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("a paired comparison needs at least one question")
    means = _resampled_means(groups, resamples, np.random.default_rng(seed))
    tail = (1 - confidence) / 2 * 100
    low, high, low90, high90 = np.percentile(means, [tail, 100 - tail, 5, 95])
    return PairedDifference(float(np.mean([g.mean() for g in groups])), float(low), float(high),
                            sum(len(g) for g in groups), float(low90), float(high90), len(groups))


class QuestionMismatch(ValueError):
    """Two results to pair were scored on different questions: the message names the domain and the counts."""


def aligned(ours: list[float], ours_ids: list[int] | None, base: list[float], base_ids: list[int] | None,
            domain: str) -> tuple[np.ndarray, np.ndarray]:
    """Two per-question score lists of one domain, paired question by question: by the questions' ids where
    both runs kept them (the order may differ), else by position (runs written before ids were kept)."""
    if ours_ids is None or base_ids is None:
        if len(ours) != len(base):
            raise QuestionMismatch(f"{domain}: {len(ours)} and {len(base)} questions")
        return np.asarray(base, dtype=np.float64), np.asarray(ours, dtype=np.float64)
    if len(set(ours_ids)) != len(ours_ids) or set(ours_ids) != set(base_ids):
        only_ours, only_base = len(set(ours_ids) - set(base_ids)), len(set(base_ids) - set(ours_ids))
        raise QuestionMismatch(f"{domain}: different questions ({only_ours} only in one, {only_base} only in the "
                               f"other, of {len(ours_ids)} and {len(base_ids)})")
    where = {uid: i for i, uid in enumerate(base_ids)}
    order = [where[uid] for uid in ours_ids]
    return np.asarray(base, dtype=np.float64)[order], np.asarray(ours, dtype=np.float64)


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
    free-text ones) on the same questions, over one or more seeds: means and their paired difference.
    `paired` is None where a record holds no per-question scores (runs written before they were kept);
    `approx` is then a normal-approximation interval for accuracies, unpaired, and None for ROUGE-L.
    `margin`: the equivalence margin the verdict tests against (None: no equivalence test)."""

    kind: str
    ours: float
    base: float
    n: int
    paired: PairedDifference | None
    approx: tuple[float, float] | None = None
    margin: float | None = None

    @property
    def interval(self) -> tuple[float, float] | None:
        return (self.paired.low, self.paired.high) if self.paired else self.approx

    def verdict(self) -> str:
        """higher / lower where the 95% interval excludes 0; else equivalent within +-margin (TOST) or
        inconclusive; "within noise" where no margin was set."""
        if self.paired is not None:
            return self.paired.verdict(self.margin)
        if self.approx is None:
            return "no interval"
        low, high = self.approx
        return "higher" if low > 0 else "lower" if high < 0 else "within noise"

    def text(self) -> str:
        diff = self.ours - self.base
        if self.interval is None:
            return f"{diff:+.3f}"
        low, high = self.interval
        return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]" + ("" if self.paired else " (unpaired approx.)")


Scored = tuple[dict[str, dict], dict[str, dict], dict | None, dict | None]  # ours, base (domain -> result), and
# each run's question ids (domain -> uids; None where it kept none)


def compare_scores(ours: dict[str, dict], base: dict[str, dict], ours_ids: dict | None = None,
                   base_ids: dict | None = None, margin: float | None = None) -> list[ScoreComparison]:
    """Each kind of result two parties share, over the domains both were scored on (`domain -> result`,
    as PartyScores.domains holds them), paired by question id where the runs kept ids."""
    return compare_seeds([(ours, base, ours_ids, base_ids)], margin)


def shared_domains(runs: list[Scored], metric: str) -> list[str]:
    """The domains every (ours, base) pair of `runs` has a `metric` for, in the first ours' order."""
    return [d for d in runs[0][0] if all(d in o and d in b and metric in o[d] and metric in b[d] for o, b, _, _ in runs)]


def paired_scores(run: Scored, domains: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """One seed's (base, ours) per-question scores over `domains`, concatenated, paired by question id (base
    put in ours' order) where both runs kept ids."""
    ours, base, ours_ids, base_ids = run
    parts = [aligned(ours[d][PER_QUESTION], (ours_ids or {}).get(d), base[d][PER_QUESTION], (base_ids or {}).get(d), d)
             for d in domains]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def compare_seeds(runs: list[Scored], margin: float | None = None) -> list[ScoreComparison]:
    """compare_scores over several seeds (one (ours, base, ids, ids) tuple a seed, each seed its own
    questions): per-question scores are concatenated over the shared domains within a seed and the seeds
    combined by the two-level bootstrap. QuestionMismatch where a seed's two results were scored on different
    questions."""
    out = []
    for metric, kind in KINDS.items():
        domains = shared_domains(runs, metric)
        if not domains:
            continue
        if all(PER_QUESTION in o[d] and PER_QUESTION in b[d] for o, b, _, _ in runs for d in domains):
            pairs = [paired_scores(run, domains) for run in runs]
            paired = seeded_difference(pairs)
            out.append(ScoreComparison(kind, float(np.mean([p[1].mean() for p in pairs])),
                                       float(np.mean([p[0].mean() for p in pairs])), paired.n, paired, margin=margin))
            continue
        ours, base = runs[0][0], runs[0][1]  # runs written before per-question scores: one seed's figures
        n = int(sum(ours[d].get("n", 0) for d in domains))
        mine, theirs = (float(np.mean([s[d][metric] for d in domains])) for s in (ours, base))
        approx = None
        if metric == "acc" and n:
            half = 1.96 * np.sqrt((mine * (1 - mine) + theirs * (1 - theirs)) / n)
            approx = (mine - theirs - half, mine - theirs + half)
        out.append(ScoreComparison(kind, mine, theirs, n, None, approx, margin))
    return out


def gain_share(triples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], resamples: int = RESAMPLES,
               seed: int = 0) -> tuple[float, float, float]:
    """The share of a reference's gain that a system recovers, (ours - zero) / (reference - zero), from
    per-question scores of the three on the same questions, one triple a seed; with its 95% interval from the
    same two-level bootstrap (the three resampled together, question by question). NaN where the reference
    did not gain on average."""
    gains = [(np.asarray(o, np.float64) - np.asarray(z, np.float64), np.asarray(r, np.float64) - np.asarray(z, np.float64))
             for z, o, r in triples]
    reference_gain = np.mean([h.mean() for _, h in gains])
    if reference_gain <= 0:  # the reference gained nothing: there is no share of it to recover
        return float("nan"), float("nan"), float("nan")
    point = np.mean([g.mean() for g, _ in gains]) / reference_gain
    rng = np.random.default_rng(seed)
    shares = np.empty(resamples)
    for i in range(resamples):
        drawn = rng.integers(0, len(gains), size=len(gains)) if len(gains) > 1 else [0]
        ours = reference = 0.0
        for g in drawn:
            pick = rng.integers(0, len(gains[g][0]), size=len(gains[g][0]))
            ours += gains[g][0][pick].mean()
            reference += gains[g][1][pick].mean()
        shares[i] = ours / reference if reference else np.nan
    low, high = np.nanpercentile(shares, [2.5, 97.5])
    return float(point), float(low), float(high)
