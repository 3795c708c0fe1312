"""PNG plots of runs: score per round per party, and DualMinCE selection rates per round."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from fedmkt.records import RunMetrics  # noqa: E402
from fedmkt.stats import KINDS, kind_scores  # noqa: E402


def plot_scores(metrics: RunMetrics, path: Path, title: str,
                baselines: dict[str, dict[str, float]] | None = None) -> Path:
    """Per round and party, accuracy over the multiple-choice domains and ROUGE-L over the free-text ones
    (a panel each, never averaged together), with 95% bootstrap intervals over the questions as error bars;
    `baselines` (metric -> label -> figure, e.g. other methods' final scores) as dashed lines."""
    kinds = [m for m in KINDS if any(m in result for _, ev in metrics.stages() for scores in ev.values()
                                     for result in scores.domains.values())] or ["acc"]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], kinds):
        intervals = False
        for index, party in enumerate(metrics.zero_shot):
            points = [(r, *kind_scores(ev[party].domains, metric)) for r, ev in metrics.stages() if party in ev]
            intervals |= any(i is not None for _, _, i in points)
            xs = [r + (index - (len(metrics.zero_shot) - 1) / 2) * 0.06 for r, _, _ in points]  # bars side by side
            ys = [mean for _, mean, _ in points]
            errors = [[m - i[0] if i else 0 for _, m, i in points], [i[1] - m if i else 0 for _, m, i in points]]
            ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=party)
        for label, value in (baselines or {}).get(metric, {}).items():
            ax.axhline(value, linestyle="--", linewidth=1, color="grey")
            ax.annotate(label, (0, value), fontsize=7, color="grey", va="bottom")
        ax.set_xlabel("round (0 = zero-shot)")
        ax.set_ylabel(KINDS[metric] + (" (bars: 95% interval)" if intervals else ""))
        ax.set_xticks(range(len(metrics.rounds) + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_selection(metrics: RunMetrics, path: Path, title: str) -> Path | None:
    """Fraction of public examples whose knowledge each party took from each source, per round."""
    rounds = [r for r in metrics.rounds if r.selection]
    if not rounds:
        return None
    receivers = sorted({name for r in rounds for name in r.selection}, key=lambda n: (n != "server", n))
    fig, axes = plt.subplots(1, len(receivers), figsize=(3.2 * len(receivers), 3.2), squeeze=False)
    for ax, receiver in zip(axes[0], receivers):
        sources = sorted({s for r in rounds for s in r.selection.get(receiver, {})}, key=lambda s: (s != "self", s))
        bottom = [0.0] * len(rounds)
        xs = [r.round for r in rounds]
        for source in sources:
            values = [r.selection.get(receiver, {}).get(source, 0.0) for r in rounds]
            ax.bar(xs, values, bottom=bottom, label="own" if source == "self" else source)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_ylim(0, 1)
        ax.set_xticks(xs)
        ax.set_xlabel("round")
        ax.set_title(f"{receiver} learns from", fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("fraction of public examples")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
