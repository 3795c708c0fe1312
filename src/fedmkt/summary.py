"""summary.md of one run: who took part, scores from zero-shot to the last round, cost, dropped clients."""

from __future__ import annotations

from fedmkt.evaluation import mean_kinds, primary_metric
from fedmkt.records import Evaluation, RunMetrics, bounded_text
from fedmkt.stats import KINDS, compare_scores


MARKDOWN_ACTIVE = set("\\`*_[]<>|")  # what could end a table cell, open a link or tag, or start emphasis


def markdown_cell(text: object) -> str:
    """Text from outside as one table cell: bounded to a line, markdown's active characters escaped."""
    line = bounded_text(text)
    return "".join("\\" + ch if ch in MARKDOWN_ACTIVE else ch for ch in line)


def domain_cell(result: dict) -> str:
    if primary_metric(result) == "acc":
        return f"{result['acc']:.3f}" + (f" / {result['acc_norm']:.3f}" if "acc_norm" in result else "")
    return f"{result['rougeL']:.3f}"


def _cell_header(result: dict) -> str:
    if primary_metric(result) == "acc":
        return "acc / acc_norm" if "acc_norm" in result else "acc"
    return "ROUGE-L"


def _row(name: str, evaluation: Evaluation, domains: list[str], kinds: list[str], dropped: dict) -> str:
    if name not in evaluation:  # dropped, or not trained by this method (baselines)
        why = "dropped" if name in dropped else "-"
        return f"| {name} | " + " | ".join(why for _ in domains + kinds) + " |"
    cells = [domain_cell(evaluation[name].domains[d]) for d in domains]
    return f"| {name} | " + " | ".join(cells + [f"{evaluation[name].mean[m]:.3f}" for m in kinds]) + " |"


def constant_answer_name(majority) -> str:
    """What the constant predictor is called: a majority class where every domain it answers is multiple
    choice, a constant answer where one is free text (its most typical public reference)."""
    free_text = any(primary_metric(result) != "acc" for result in majority.domains.values())
    return "Constant answer" if free_text else "Majority class"


def _majority_row(majority, domains: list[str], kinds: list[str]) -> str:
    """Each domain's commonest label (free text: most typical reference) in the public set, answered to every
    question (no acc_norm: one answer)."""
    cells = [domain_cell(majority.domains[d]) if d in majority.domains else "-" for d in domains]
    name = constant_answer_name(majority).lower()
    return (f"| {name} (public labels) | " + " | ".join(cells + [f"{majority.mean[m]:.3f}" if m in majority.mean
                                                                         else "-" for m in kinds]) + " |")


def _against_zero_shot(metrics: RunMetrics) -> list[str]:
    """Each party's last scores against its own zero-shot on the same questions, with the paired interval."""
    if not metrics.rounds:
        return []
    last = metrics.rounds[-1]
    rows = []
    for name, zero in metrics.zero_shot.items():
        if name in last.evaluation:
            for c in compare_scores(last.evaluation[name].domains, zero.domains):
                rows.append(f"| {name} | {c.kind} (n={c.n}) | {c.base:.3f} | {c.ours:.3f} | {c.text()} | "
                            f"{c.verdict()} |")
    if not rows:
        return []
    return [f"## after round {last.round} against zero-shot", "",
            "Difference on the same questions with its 95% interval (paired bootstrap over questions); 'higher' "
            "/ 'lower': the interval excludes 0, otherwise within noise.", "",
            "| party | result (questions) | zero-shot | now | difference [95% interval] | verdict |",
            "|---|---|---|---|---|---|", *rows, ""]


def _private(client: dict) -> str:
    if client.get("domains"):
        return ", ".join(client["domains"])
    if client.get("private"):
        return ", ".join(s["source"] for s in client["private"]["sources"])
    return "on its node"


def _data(cfg: dict, split) -> str:
    data = cfg["data"]
    sizes = f"public {split.public}, private {split.private}, evaluation {split.evaluation}"
    if data.get("public"):
        return f"- data (public: {', '.join(s['source'] for s in data['public']['sources'])}): {sizes}"
    tasks = data.get("bigbench_tasks")
    sources = (", ".join(data["public_domains"]) if data.get("public_domains")
               else f"MMLU{', BIG-bench ' + ', '.join(tasks) if tasks else ''}")
    form = ", cloze multiple choice" if data.get("choice_format") == "cloze" else ""
    return f"- data ({sources}{form}): {sizes}"


def _own_rows(metrics: RunMetrics) -> list[str]:
    """Each client's score on its own held-out set (clients.N.eval), zero-shot to the last round."""
    stages = [("zero-shot" if r == 0 else f"round {r}", e) for r, e in metrics.stages()]
    clients = [name for name, scores in metrics.zero_shot.items() if scores.own is not None]
    if not clients:
        return []
    lines = ["## clients' own evaluation sets", "", "| client | metric | " + " | ".join(t for t, _ in stages) + " |",
             "|" + "---|" * (len(stages) + 2)]
    for name in clients:
        own = metrics.zero_shot[name].own
        metric = primary_metric(own)
        cells = [f"{e[name].own[metric]:.3f}" if name in e and e[name].own else "-" for _, e in stages]
        lines.append(f"| {name} | {metric} (n={own['n']:.0f}) | " + " | ".join(cells) + " |")
    return lines + [""]


def _privacy_rows(metrics: RunMetrics) -> list[str]:
    """Each DP client's epsilon spent after each round it trained in (docs/privacy.md says what it covers)."""
    clients = sorted({name for r in metrics.rounds for name in r.privacy})
    if not clients:
        return []
    lines = ["## privacy (DP-SGD on each client's private rows)", "",
             "Epsilon spent so far at the client's delta after each round (- : not asked that round); 'stopped': "
             "its budget allowed no further private training.", "",
             "| client | delta | " + " | ".join(f"round {r.round}" for r in metrics.rounds) + " |",
             "|" + "---|" * (len(metrics.rounds) + 2)]
    for name in clients:
        seen = [r.privacy[name] for r in metrics.rounds if name in r.privacy]
        cells = [(f"{r.privacy[name]['epsilon']:.3f}" + (" stopped" if r.privacy[name]["stopped"] else ""))
                 if name in r.privacy else "-" for r in metrics.rounds]
        lines.append(f"| {markdown_cell(name)} | {seen[-1]['delta']:.3g} | " + " | ".join(cells) + " |")
    return lines + [""]


def summary_markdown(metrics: RunMetrics) -> str:
    zero = metrics.zero_shot
    parties = list(zero)
    first = next(iter(zero.values())).domains
    domains = list(first)
    cfg = metrics.config
    split = metrics.split
    lines = [
        "# FedMKT run summary", "",
        f"- server LLM: `{cfg['server']['source']}`; clients: "
        + ", ".join(f"`{c['name']}` (`{c['model']['source']}`, private: {_private(c)})" for c in cfg["clients"]),
        f"- method: {cfg['fedmkt'].get('method', 'fedmkt')}, rounds: {cfg['fedmkt']['rounds']}, top-K: {cfg['fedmkt']['top_k']}, lambda: {cfg['fedmkt']['ce_weight']}, "
        f"selection: {cfg['fedmkt']['selection']}, LLM training: {cfg['fedmkt']['llm_training']}, "
        f"FedAvg of SLMs: {cfg['fedmkt']['fedavg_slms']}",
        _data(cfg, split),
        f"- wall time: {metrics.wall_s or 0:.0f} s", "",
    ]
    kinds = mean_kinds(first)
    header = "| party | " + " | ".join([f"{d} {_cell_header(first[d])}" for d in domains]
                                      + [f"mean {KINDS[m]}" for m in kinds]) + " |"
    sep = "|" + "---|" * (len(domains) + len(kinds) + 1)
    stages = [("zero-shot", zero, {})] + [(f"after round {r.round}", r.evaluation, r.dropped) for r in metrics.rounds
                                          if r.evaluation]
    for title, evaluation, dropped in stages:
        rows = [_row(p, evaluation, domains, kinds, dropped) for p in parties]
        if title == "zero-shot" and metrics.majority is not None:  # the constant predictor, beside zero-shot
            rows.append(_majority_row(metrics.majority, domains, kinds))
        lines += [f"## {title}", "", header, sep, *rows, ""]
    lines += _against_zero_shot(metrics)
    lines += _own_rows(metrics)
    lines += _privacy_rows(metrics)
    if metrics.rounds:
        lines += ["## rounds", "", "| round | wall s | model compute s | wall/compute | bytes up per client | bytes down | "
                  "server picks (self / clients) |", "|---|---|---|---|---|---|---|"]
        for r in metrics.rounds:
            picks = r.selection.get("server", {})
            pick = " / ".join(f"{v:.2f}" for v in picks.values()) if picks else "-"
            t = r.timing
            lines.append(f"| {r.round} | {t.wall_s:.1f} | {t.model_compute_s:.1f} | {t.overhead_ratio:.3f} | "
                         f"{r.bytes.up_per_client:.0f} | {r.bytes.down:.0f} | {pick} |")
        lines.append("")
    if metrics.stopped:
        lines += ["## stopped", "", f"The run stopped before its last round: {markdown_cell(metrics.stopped)}. "
                  "`fedmkt run --resume` repeats that round.", ""]
    dropped = [(r.round, who, why) for r in metrics.rounds for who, why in r.dropped.items()]
    if dropped:
        lines += ["## dropped clients", "", "| round | client | reason |", "|---|---|---|"]
        lines += [f"| {r} | {markdown_cell(who)} | {markdown_cell(why)} |" for r, who, why in dropped] + [""]
    return "\n".join(lines)
