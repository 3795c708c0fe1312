"""Reports: a run's summary.md with plots, and an experiment grid's report.md (paper-shaped tables,
the paper's claims checked, plots)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from fedmkt.config import read_yaml_mapping
from fedmkt.grid import GridSpec
from fedmkt.evaluation import mean_kinds, metric_name, primary_metric
from fedmkt.federation.store import RunStore
from fedmkt.files import atomic_write_text, child, refuse_links_leaving, round_numbers
from fedmkt.method_names import CENTRALIZED, FEDAVG, FEDMKT, LLM2SLM_LABEL, METHODS, STANDALONE, method_label
from fedmkt.plots import plot_scores, plot_selection
from fedmkt.records import PER_QUESTION, Evaluation, PartyScores, RunMetrics
from fedmkt.stats import (KINDS, QuestionMismatch, Scored, compare_seeds, gain_share, kind_scores, paired_scores,
                          shared_domains)
from fedmkt.summary import constant_answer_name, markdown_cell, summary_markdown


# -- experiment grids -------------------------------------------------------------------------

def _model_label(spec: dict) -> str:
    layers = spec.get("keep_layers")
    return spec["source"] + (f" ({layers} layers)" if layers else "")


@dataclass
class GridCell:
    """One finished or started cell of a grid, as the report reads it: its run, or one run a seed (`runs`,
    keyed by seed; `metrics` is the first)."""

    name: str
    scenario: str
    metrics: RunMetrics
    runs: dict[int, RunMetrics] = field(default_factory=dict)
    ablates: str | None = None

    def __post_init__(self) -> None:
        if not self.runs:
            self.runs = {self.metrics.config["seed"]: self.metrics}

    @property
    def method(self) -> str:
        return method_label(self.metrics.config["fedmkt"])

    @property
    def final(self) -> Evaluation:
        """The parties scored after the last round (in the first seed's run; every seed trains the same ones)."""
        return self.metrics.final

    def finals(self, party: str) -> list[PartyScores]:
        return [run.final[party] for run in self.runs.values() if party in run.final]


def _load_grid(grid_dir: Path, grid: GridSpec | None = None) -> GridSpec | None:
    if grid is None and (grid_dir / "grid.yaml").is_file():
        grid = GridSpec.model_validate(read_yaml_mapping(grid_dir / "grid.yaml", "grid") or {})
    return grid


def _load_cells(grid_dir: Path, grid: GridSpec | None) -> list[GridCell]:
    """The cells that have a metrics.json (with seeds: those seeds' runs that have one)."""
    names = [c.name for c in grid.cells] if grid else sorted(p.name for p in grid_dir.iterdir() if p.is_dir())
    specs = {c.name: c for c in grid.cells} if grid else {}
    cells = []
    for name in names:
        dirs = grid.run_dirs(grid_dir, name) if grid else {None: grid_dir / name}
        runs = {}
        for seed, run_dir in dirs.items():
            path = run_dir / "metrics.json"
            if path.is_file():
                metrics = RunMetrics.from_json(json.loads(path.read_text()))
                runs[metrics.config["seed"] if seed is None else seed] = metrics
        if runs:
            spec = specs.get(name)
            cells.append(GridCell(name, spec.scenario if spec else "", next(iter(runs.values())), runs,
                                  spec.ablates if spec else None))
    return cells


def _scoring(data: dict) -> str:
    if data.get("choice_format") == "cloze":
        return "cloze: each answer's text scored by its likelihood"
    return "choice texts scored" if data.get("eval_scoring") == "text" else "letter scoring"


@dataclass
class _Columns:
    """The result columns of the grid's tables: each evaluation domain, then the mean of each kind of result."""

    domains: list[str]
    kinds: list[str]
    names: list[str]

    @classmethod
    def of(cls, first: RunMetrics) -> "_Columns":
        zero = first.zero_shot["server"].domains
        domains = list(next(iter(first.zero_shot.values())).domains)
        kinds = mean_kinds(zero)
        names = [f"{d.rsplit('/', 1)[-1]} ({metric_name(zero[d])})" for d in domains] + [f"mean {KINDS[m]}"
                                                                                        for m in kinds]
        return cls(domains, kinds, names)

    def header(self, *first: str) -> list[str]:
        return ["| " + " | ".join([*first, *self.names]) + " |", "|" + "---|" * (len(self.names) + len(first))]

    def cells(self, result: PartyScores | list[PartyScores]) -> str:
        """One party's figures; over several seeds their mean and the seeds' standard deviation (mean ±sd)."""
        results = result if isinstance(result, list) else [result]

        def shown(values: list[float]) -> str:
            if not values:
                return "-"
            return f"{np.mean(values):.3f}" + (f" ±{np.std(values, ddof=1):.3f}" if len(values) > 1 else "")

        domains = [shown([r.domains[d][primary_metric(r.domains[d])] for r in results if d in r.domains])
                   for d in self.domains]
        return " | ".join(domains + [shown([r.mean[m] for r in results if m in r.mean]) for m in self.kinds])


def _grid_intro(first: RunMetrics, title: str) -> list[str]:
    cfg = first.config
    return [f"# {title}", "",
            f"Server LLM `{_model_label(cfg['server'])}`, {cfg['fedmkt']['rounds']} rounds. Evaluation: "
            + ", ".join(f"{d} ({n})" for d, n in first.split.evaluation.items())
            + f" questions; accuracy ({_scoring(cfg['data'])}), ROUGE-L F1 for free-text tasks; each 'mean' is over the "
            f"domains of its kind. Public set {first.split.public} examples, private "
            + ", ".join(f"{k} {v}" for k, v in first.split.private.items()) + ".", ""]


def _majority_row(cells: list[GridCell], columns: _Columns, width: int) -> list[str]:
    """The constant predictor's row (each domain's commonest public label, or most typical public reference),
    over the first cell's seeds."""
    majority = [run.majority for run in cells[0].runs.values() if run.majority is not None]
    if not majority:
        return []
    return [f"| {constant_answer_name(majority[0])} | - | {cells[0].name} (public labels) |" + " - |" * (width - 3)
            + f" {columns.cells(majority)} |"]


def _llm_table(cells: list[GridCell], columns: _Columns) -> list[str]:
    """Majority class and zero-shot, then every cell that trained the server."""
    first = cells[0]
    lines = ["## LLM (server)", "", *columns.header("method", "scenario", "cell"),
             *_majority_row(cells, columns, 3),
             f"| Zero-Shot | - | {first.name} (round 0) | "
             f"{columns.cells([r.zero_shot['server'] for r in first.runs.values()])} |"]
    for cell in cells:
        if "server" in cell.final:
            lines.append(f"| {cell.method} | {cell.scenario} | {cell.name} | {columns.cells(cell.finals('server'))} |")
    return lines


def _slm_table(cells: list[GridCell], columns: _Columns) -> list[str]:
    """Majority class, zero-shot once per distinct client model, then every cell's trained clients."""
    lines = ["", "## SLMs (clients)", "", *columns.header("method", "scenario", "cell", "client (model)"),
             *_majority_row(cells, columns, 4)]
    seen = set()
    for cell in cells:
        for client in cell.metrics.config["clients"]:
            model = _model_label(client["model"])
            if model not in seen and client["name"] in cell.metrics.zero_shot:
                seen.add(model)
                zero = [r.zero_shot[client["name"]] for r in cell.runs.values() if client["name"] in r.zero_shot]
                lines.append(f"| Zero-Shot | - | {cell.name} (round 0) | {model} | {columns.cells(zero)} |")
    for cell in cells:
        for client in cell.metrics.config["clients"]:
            if client["name"] in cell.final:
                lines.append(f"| {cell.method} | {cell.scenario} | {cell.name} | {client['name']} "
                             f"({_model_label(client['model'])}) | {columns.cells(cell.finals(client['name']))} |")
    return lines


def _selection_table(cells: list[GridCell]) -> list[str]:
    """Per-round selection rates of DualMinCE."""
    rows = []
    for cell in cells:
        for r in cell.metrics.rounds:
            for receiver, picks in r.selection.items():
                taken = ", ".join(f"{'own' if s == 'self' else s} {v:.2f}" for s, v in picks.items())
                rows.append(f"| {cell.name} | {r.round} | {receiver} | {taken} |")
    if not rows:
        return []
    return ["## DualMinCE selection per round", "",
            "Fraction of public examples whose soft targets each receiver took from each source.", "",
            "| cell | round | receiver | sources |", "|---|---|---|---|", *rows, ""]


def _cost_table(cells: list[GridCell]) -> list[str]:
    lines = ["## cost", "", "| cell | method | wall s | model compute s | bytes up per client per round |",
             "|---|---|---|---|---|"]
    for cell in cells:
        rounds = cell.metrics.rounds
        compute = sum(r.timing.model_compute_s for r in rounds)
        up = sum(r.bytes.up_per_client for r in rounds) / max(len(rounds), 1)
        lines.append(f"| {cell.name} | {cell.method} | {cell.metrics.wall_s or 0:.0f} | {compute:.0f} | {up:.0f} |")
    return lines + [""]


def _plots_section(plots: dict[str, list[str]]) -> list[str]:
    if not plots:
        return []
    return ["## plots", "", *[f"![{name}]({f})" for name, files in plots.items() for f in files], ""]


def grid_markdown(cells: list[GridCell], title: str, plots: dict[str, list[str]], margin: float | None = None) -> str:
    columns = _Columns.of(cells[0].metrics)
    lines = [*_grid_intro(cells[0].metrics, title), *_llm_table(cells, columns), *_slm_table(cells, columns), "",
             *claims_markdown(cells, margin), *_selection_table(cells), *_cost_table(cells), *_plots_section(plots)]
    return "\n".join(lines)


def _client_key(config: dict, name: str) -> str:
    """What a client's result depends on besides the method: its model and private data, and the run's
    seed, data and training settings. Equal keys: the same client, trained another way."""
    client = next(c for c in config["clients"] if c["name"] == name)
    spec = {k: v for k, v in client.items() if k != "public_key"}
    return json.dumps([spec, config["seed"], config["data"], config["train"], config["lora"]], sort_keys=True)


def _federation_key(config: dict, models: bool = True) -> str:
    """What the server's result depends on besides the method: its model, every client and its data.
    models=False: the clients' data only (a centralized LLM never sees the client models)."""
    clients = [{k: v for k, v in c.items() if k != "public_key" and (models or k != "model")}
               for c in config["clients"]]
    return json.dumps([config["server"], clients, config["seed"], config["data"], config["train"], config["lora"]],
                      sort_keys=True)


def _pooled_key(config: dict) -> str:
    return _federation_key(config, models=False)


def _matched(candidates: list[GridCell], key: Callable[[dict], str], cfg: dict, party: str) -> GridCell | None:
    """The first candidate cell that scored `party` and whose key (what the result depends on besides the
    method) equals this config's."""
    return next((c for c in candidates if party in c.final and key(c.metrics.config) == key(cfg)), None)


class ReportError(ValueError):
    """The report cannot pair two cells it must compare: the message names them."""


def _against_by_seed(ours: GridCell, party: str, base: GridCell, base_party: str | None = None,
                     zero_shot: bool = False) -> dict[int, Scored]:
    """`party`'s final scores in `ours` against `base_party`'s (the same party by default) in `base`, final or
    zero-shot, for each seed both cells ran, with each run's question ids."""
    pairs = {}
    for seed, run in ours.runs.items():
        other = base.runs.get(seed)
        theirs = None if other is None else (other.zero_shot if zero_shot else other.final).get(base_party or party)
        if party in run.final and theirs is not None:
            pairs[seed] = (run.final[party].domains, theirs.domains, run.question_ids, other.question_ids)
    return pairs


def _against(ours: GridCell, party: str, base: GridCell, base_party: str | None = None,
             zero_shot: bool = False) -> list[Scored]:
    return list(_against_by_seed(ours, party, base, base_party, zero_shot).values())


@dataclass
class _ClaimRows:
    """Rows of the claims tables: the paper's claims, the ablations, and the other matched comparisons."""

    claims: list[str]
    others: list[str]
    margin: float | None = None
    ablations: list[str] = field(default_factory=list)
    shares: list[str] = field(default_factory=list)

    def add(self, rows: list[str], claim: str, cell: str, pairs: list[Scored], base_name: str) -> None:
        """One row per kind of result (accuracy, ROUGE-L) the two share, judged by its paired difference over
        the seeds both ran."""
        if not pairs:
            return
        try:
            comparisons = compare_seeds(pairs, self.margin)
        except QuestionMismatch as error:
            raise ReportError(f"{claim}: cells {cell} and {base_name} were scored on different questions "
                              f"({error}); pairing them would compare other questions") from None
        seeds = f", {len(pairs)} seeds" if len(pairs) > 1 else ""
        for c in comparisons:
            rows.append(f"| {claim} | {cell} | {c.kind} (n={c.n}{seeds}) | "
                        f"{c.ours:.3f} | {c.base:.3f} ({base_name}) | {c.text()} | {c.verdict()} |")


def _slm_claims(cell: GridCell, of: dict[str, list[GridCell]], rows: _ClaimRows) -> None:
    """Each trained SLM against its zero-shot and the matched standalone client; FedMKT's also against FedAvg
    and LLM2SLM on the same clients and server."""
    cfg = cell.metrics.config
    for client in cfg["clients"]:
        name = client["name"]
        if name not in cell.final:
            continue
        rows.add(rows.claims, f"{cell.method}: SLM {name} beats its zero-shot", cell.name,
                 _against(cell, name, cell, zero_shot=True), "round 0")
        base = _matched(of[STANDALONE.label], partial(_client_key, name=name), cfg, name)
        if base is not None:
            rows.add(rows.claims, f"{cell.method}: SLM {name} beats standalone", cell.name, _against(cell, name, base),
                     base.name)
        if cell.method.startswith(FEDMKT.label):  # the same clients and server, trained the other ways
            for label in (FEDAVG.label, LLM2SLM_LABEL):
                other = _matched(of[label], _federation_key, cfg, name)
                if other is not None:
                    rows.add(rows.others, f"{cell.method}: SLM {name} against {label}", cell.name,
                             _against(cell, name, other), other.name)


def _llm_claims(cell: GridCell, of: dict[str, list[GridCell]], rows: _ClaimRows) -> None:
    """The trained LLM against its zero-shot and the centralized cell pooling exactly this cell's clients; and
    against each of its own SLMs (the same questions)."""
    if "server" not in cell.final:
        return
    rows.add(rows.claims, f"{cell.method}: LLM beats its zero-shot", cell.name,
             _against(cell, "server", cell, zero_shot=True), "round 0")
    pooled = _matched(of[CENTRALIZED.label], _pooled_key, cell.metrics.config, "server")
    if pooled is not None:
        rows.add(rows.claims, f"{cell.method}: LLM matches centralized", cell.name, _against(cell, "server", pooled),
                 pooled.name)
        rows.shares += _share_rows(cell, pooled)
    for client in cell.metrics.config["clients"]:
        if client["name"] in cell.final:
            rows.add(rows.others, f"{cell.method}: LLM against its SLM {client['name']}", cell.name,
                     _against(cell, "server", cell, client["name"]), f"{cell.name} {client['name']}")


def _share_rows(cell: GridCell, pooled: GridCell) -> list[str]:
    """The share of the centralized LLM's gain over zero-shot that this cell's LLM recovers, per kind of result,
    over the seeds both ran (their zero-shot questions are the same: the same clients' data and seed)."""
    zero = _against_by_seed(cell, "server", cell, zero_shot=True)
    reference = _against_by_seed(cell, "server", pooled)
    seeds = [s for s in reference if s in zero]
    out = []
    for metric, kind in KINDS.items():
        runs = [zero[s] for s in seeds] + [reference[s] for s in seeds]
        domains = [d for d in (shared_domains(runs, metric) if runs else [])
                   if all(PER_QUESTION in o[d] and PER_QUESTION in b[d] for o, b, _, _ in runs)]
        if not domains:
            continue
        triples = []
        for s in seeds:  # (zero-shot, ours, centralized), all in our questions' order
            zero_scores, ours = paired_scores(zero[s], domains)
            triples.append((zero_scores, ours, paired_scores(reference[s], domains)[0]))
        share, low, high = gain_share(triples)
        gain = np.mean([o.mean() - z.mean() for z, o, _ in triples])
        full = np.mean([r.mean() - z.mean() for z, _, r in triples])
        shown = f"{share:.2f} [{low:.2f}, {high:.2f}]" if np.isfinite(share) else "- (no centralized gain)"
        out.append(f"| {cell.name} | {pooled.name} | {kind} | {gain:+.3f} | {full:+.3f} | {shown} |")
    return out


def _ablation_rows(cell: GridCell, by_name: dict[str, GridCell], rows: _ClaimRows) -> None:
    """A cell that ablates another (`ablates:` in the grid file) against it, for every party both trained."""
    base = by_name.get(cell.ablates or "")
    if base is None:
        return
    for party in [p for p in cell.final if p in base.final]:
        role = "LLM" if party == "server" else f"SLM {party}"
        rows.add(rows.ablations, f"{base.method} ({base.name}) against {cell.name}: {role}", base.name,
                 _against(base, party, cell), cell.name)


_HEAD = ["| claim | cell | result (questions) | ours | baseline | difference [95% interval] | verdict |",
         "|---|---|---|---|---|---|---|"]


def _verdict_words(margin: float | None, seeds: int) -> str:
    over = ("a two-level bootstrap over the seeds, then the questions within each seed (docs/experiments.md)"
            if seeds > 1 else "a paired bootstrap over the same questions")
    test = (f"'equivalent within ±{margin:g}': two one-sided tests at 5% (the 90% interval inside ±{margin:g}, a "
            "margin the grid file fixed before the run); 'inconclusive': neither." if margin is not None
            else "'within noise': neither (the grid sets no equivalence_margin, so equivalence is not tested).")
    return (f"Difference of final scores (ours - baseline) with its 95% interval from {over}, where the runs kept "
            "per-question scores (else an unpaired normal approximation for accuracies); questions are paired by "
            f"id where the runs kept ids. 'higher' / 'lower': the interval excludes 0; {test}")


def claims_markdown(cells: list[GridCell], margin: float | None = None) -> list[str]:
    """The paper's claims, checked on this grid, each against a matched baseline cell: an SLM against its
    zero-shot and against the same client (model, private data, settings) trained standalone; the LLM against
    its zero-shot and against the centralized cell that pools exactly this cell's clients' data. Then the
    ablations the grid file names (`ablates:`), and the other matched comparisons: FedMKT's SLMs against
    FedAvg and LLM2SLM on the same clients, the LLM against its own SLMs. Without a matched cell, no row. Each
    is judged per kind of result (accuracy, ROUGE-L) by its paired difference, seed by seed."""
    of = {label: [c for c in cells if c.method == label]
          for label in (STANDALONE.label, CENTRALIZED.label, FEDAVG.label, LLM2SLM_LABEL)}
    by_name = {c.name: c for c in cells}
    rows = _ClaimRows([], [], margin)
    for cell in cells:
        if METHODS[cell.metrics.config["fedmkt"].get("method", FEDMKT.name)].distills:
            _slm_claims(cell, of, rows)
            _llm_claims(cell, of, rows)
        _ablation_rows(cell, by_name, rows)
    if not (rows.claims or rows.others or rows.ablations):
        return []
    seeds = max(len(c.runs) for c in cells)
    lines = ["## the paper's claims, checked", "", _verdict_words(margin, seeds) + " Each claim compares matched "
             "cells: the same client (model, private data, settings) trained standalone; the centralized cell "
             "pooling exactly this cell's clients.", "", *_HEAD, *rows.claims, ""]
    if rows.shares:
        lines += ["## share of the centralized gain (LLM)", "", "How much of the centralized LLM's gain over its "
                  "zero-shot the federated LLM recovers, (ours - zero-shot) / (centralized - zero-shot) on the same "
                  "questions, with the same bootstrap's 95% interval.", "",
                  "| cell | centralized | result | gain over zero-shot | centralized gain | share [95% interval] |",
                  "|---|---|---|---|---|---|", *rows.shares, ""]
    if rows.ablations:
        lines += ["## ablations", "", "Each cell against the one it ablates (the grid file's `ablates:`), for every "
                  "party both trained: does the ablated part add anything?", "", *_HEAD, *rows.ablations, ""]
    if rows.others:
        lines += ["## other matched comparisons", "",
                  "FedMKT's SLMs against the same clients (same server, same data) trained by FedAvg or with the "
                  "LLM frozen (LLM2SLM), and each trained LLM against its own SLMs on the same questions; the same "
                  "intervals and verdicts.", "", *_HEAD, *rows.others, ""]
    return lines


def _baseline_lines(cells: list[GridCell]) -> dict[str, dict[str, float]]:
    """The baseline cells' final results as reference lines for every cell's plot: each standalone client and
    the centralized LLM, per kind of result (accuracy, ROUGE-L)."""
    lines: dict[str, dict[str, float]] = {}
    for cell in cells:
        reference = METHODS[cell.metrics.config["fedmkt"].get("method", FEDMKT.name)].reference
        parties = {"clients": [p for p in cell.final if p != "server"], "server": ["server"]}.get(reference, [])
        for party in parties:
            for metric in KINDS:
                if any(metric in r for r in cell.final[party].domains.values()):
                    lines.setdefault(metric, {})[f"{cell.method} {party}"] = kind_scores(cell.final[party].domains, metric)[0]
    return lines


def write_grid_report(grid_dir: Path, grid: GridSpec | None = None, output: Path | None = None) -> Path:
    """report.md and plots/ for a grid folder (into `output` if given, e.g. docs/)."""
    grid = _load_grid(grid_dir, grid)
    cells = _load_cells(grid_dir, grid)
    if not cells:
        raise FileNotFoundError(f"no finished or started runs (metrics.json) under {grid_dir}")
    out = output or grid_dir
    refuse_links_leaving(out)  # (nothing yet: a folder to be made)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    plots = {}
    baselines = _baseline_lines(cells)
    for cell in cells:
        files = [plot_scores(cell.metrics, out / "plots" / f"{cell.name}-scores.png", f"{cell.name}: {cell.method}",
                             baselines)]
        selection = plot_selection(cell.metrics, out / "plots" / f"{cell.name}-selection.png",
                                   f"{cell.name}: DualMinCE selection")
        files += [selection] if selection else []
        plots[cell.name] = [f"plots/{f.name}" for f in files]
    title = f"Experiment grid `{grid.name if grid else grid_dir.name}`"
    margin = grid.equivalence_margin if grid else None
    return atomic_write_text(child(out, "report.md"), grid_markdown(cells, title, plots, margin))


def _cell(text: str) -> str:
    return markdown_cell(" ".join(str(text).split()))  # one line: a table cell holds no newline


def answers_markdown(run_dir: Path, sample: int = 3) -> str:
    """A few generated answers of each party beside their references, at zero-shot and after the last round
    that saved answers (answers/round-N/, federation/store.py); empty without free-text evaluation."""
    rounds = round_numbers(run_dir / "answers")
    if not rounds:
        return ""
    shown = sorted({rounds[0], rounds[-1]})
    lines = [f"\n## sample answers (the first {sample} of each party's file, "
             + " and ".join(f"round {r}" for r in shown) + ")\n"]
    for party_file in sorted((run_dir / "answers" / f"round-{rounds[-1]}").glob("*.jsonl")):
        lines += [f"\n### {party_file.stem}\n", "| question | reference | round | answer | ROUGE-L |",
                  "|---|---|---|---|---|"]
        for round_no in shown:
            path = run_dir / "answers" / f"round-{round_no}" / party_file.name
            rows = [json.loads(line) for line in path.read_text().splitlines()[:sample]] if path.is_file() else []
            for row in rows:
                lines.append(f"| {_cell(row['question'])} | {_cell(row['references'][0])} | {round_no} | "
                             f"{_cell(row['answer'])} | {row['rougeL']:.3f} |")
    return "\n".join(lines) + "\n"


def write_run_report(run_dir: Path) -> Path:
    """summary.md plus its plots and a sample of the generated answers, for one run folder (never written
    through a link leading out of it)."""
    refuse_links_leaving(run_dir)
    metrics = RunStore(run_dir).read_metrics()
    plots_dir = child(run_dir, "plots")
    plots_dir.mkdir(exist_ok=True)
    files = [plot_scores(metrics, child(plots_dir, "scores.png"), run_dir.name),
             plot_selection(metrics, child(plots_dir, "selection.png"), f"{run_dir.name}: DualMinCE selection")]
    plots = "\n## plots\n\n" + "".join(f"![{f.stem}](plots/{f.name})\n" for f in files if f) + "\n"
    return atomic_write_text(child(run_dir, "summary.md"), summary_markdown(metrics) + answers_markdown(run_dir) + plots)
