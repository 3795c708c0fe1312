"""Human-readable summary of a run folder (markdown)."""

from __future__ import annotations

from pathlib import Path


def _row(name: str, evaluation: dict, domains: list[str]) -> str:
    if name not in evaluation:  # dropped from that round
        return f"| {name} | " + " | ".join("dropped" for _ in domains) + " | dropped |"
    cells = [f"{evaluation[name][d]['acc']:.3f} / {evaluation[name][d]['acc_norm']:.3f}" for d in domains]
    return f"| {name} | " + " | ".join(cells) + f" | {evaluation[name]['mean']['acc']:.3f} |"


def summary_markdown(metrics: dict) -> str:
    zero = metrics["zero_shot"]
    parties = list(zero)
    domains = [d for d in next(iter(zero.values())) if d != "mean"]
    cfg = metrics["config"]
    lines = [
        "# FedMKT run summary", "",
        f"- server LLM: `{cfg['server']['source']}`; clients: "
        + ", ".join(f"`{c['name']}` (`{c['model']['source']}`, private: {', '.join(c['domains'])})" for c in cfg["clients"]),
        f"- rounds: {cfg['fedmkt']['rounds']}, top-K: {cfg['fedmkt']['top_k']}, lambda: {cfg['fedmkt']['ce_weight']}, "
        f"selection: {cfg['fedmkt']['selection']}, LLM training: {cfg['fedmkt']['llm_training']}, "
        f"FedAvg of SLMs: {cfg['fedmkt']['fedavg_slms']}",
        f"- data (MMLU): public {metrics['split']['public']}, private {metrics['split']['private']}, "
        f"evaluation {metrics['split']['evaluation']}",
        f"- wall time: {metrics.get('wall_s', 0):.0f} s", "",
    ]
    header = "| party | " + " | ".join(f"{d} acc / acc_norm" for d in domains) + " | mean acc |"
    sep = "|" + "---|" * (len(domains) + 2)
    stages = [("zero-shot", zero)] + [(f"after round {r['round']}", r["evaluation"]) for r in metrics["rounds"]]
    for title, evaluation in stages:
        lines += [f"## {title}", "", header, sep] + [_row(p, evaluation, domains) for p in parties] + [""]
    if metrics["rounds"]:
        lines += ["## rounds", "", "| round | wall s | model compute s | wall/compute | bytes up per client | bytes down | "
                  "server picks (self / clients) |", "|---|---|---|---|---|---|---|"]
        for r in metrics["rounds"]:
            picks = r["selection"].get("server", {})
            pick = " / ".join(f"{v:.2f}" for v in picks.values()) if picks else "LLM frozen"
            t = r["timing"]
            lines.append(f"| {r['round']} | {t['wall_s']:.1f} | {t['model_compute_s']:.1f} | {t['overhead_ratio']:.3f} | "
                         f"{r['bytes']['up_per_client']:.0f} | {r['bytes']['down']:.0f} | {pick} |")
        lines.append("")
    dropped = [(r["round"], who, why) for r in metrics["rounds"] for who, why in r.get("dropped", {}).items()]
    if dropped:
        lines += ["## dropped clients", "", "| round | client | reason |", "|---|---|---|"]
        lines += [f"| {r} | {who} | {why} |" for r, who, why in dropped] + [""]
    return "\n".join(lines)


def write_summary(run_dir: Path, metrics: dict) -> Path:
    path = run_dir / "summary.md"
    path.write_text(summary_markdown(metrics))
    return path
