"""PNG plots of runs: score per round per party, and DualMinCE selection rates per round."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from fedmkt.records import RunMetrics  # noqa: E402


def plot_scores(metrics: RunMetrics, path: Path, title: str) -> Path:
    """Mean score (accuracy; ROUGE-L for free-text domains) per round, one line per party."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for party in metrics.zero_shot:
        points = [(r, ev[party].score) for r, ev in metrics.stages() if party in ev]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=party)
    ax.set_xlabel("round (0 = zero-shot)")
    ax.set_ylabel("mean score")
    ax.set_xticks(range(len(metrics.rounds) + 1))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
