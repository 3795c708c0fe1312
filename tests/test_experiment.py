"""Experiment grids on tiny models: every method, resumable after a crash, and the report."""

import json

import pytest
import yaml

from fedmkt.config import ConfigError
from fedmkt.grid import load_grid
from fedmkt.experiment import run_grid
from fedmkt.federation.coordinator import Coordinator
from tests.tiny import tiny_base

BASE = tiny_base(rounds=1)
CELLS = [
    {"name": "fedmkt", "scenario": "homogeneous", "config": {"fedmkt": {"rounds": 2}}},
    {"name": "llm2slm", "scenario": "homogeneous", "config": {"fedmkt": {"llm_training": False}}},
    {"name": "standalone", "config": {"fedmkt": {"method": "standalone"}}},
    {"name": "centralized", "config": {"fedmkt": {"method": "centralized"}}},
    {"name": "hetero", "scenario": "heterogeneous", "config": {"clients": [
        {"name": "stem", "model": {"source": "tiny:smollm2-135m-instruct"}, "domains": ["stem"]},
        {"name": "hum", "model": {"source": "tiny:gemma3-270m", "keep_layers": 1}, "domains": ["humanities"]}]}},
]


def write_grid(tmp_path, cells=CELLS, name="g"):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": BASE, "cells": cells}))
    return path


def test_grid_runs_resumes_and_reports(tmp_path, mmlu, monkeypatch):
    grid = write_grid(tmp_path)
    calls = []
    real = Coordinator.run_round

    def crash_once(self, round_no):  # the first cell dies in its second round, once
        calls.append((self.store.root.name, round_no))
        if (self.store.root.name, round_no) == ("fedmkt", 2) and calls.count(("fedmkt", 2)) == 1:
            raise RuntimeError("power cut")
        return real(self, round_no)

    monkeypatch.setattr(Coordinator, "run_round", crash_once)
    with pytest.raises(RuntimeError, match="power cut"):
        run_grid(grid, tmp_path / "runs", questions_loader=lambda config: mmlu)
    grid_dir = run_grid(grid, tmp_path / "runs", questions_loader=lambda config: mmlu)
    # Round 1 of the crashed cell was not run again; every other cell ran once.
    assert calls.count(("fedmkt", 1)) == 1 and calls.count(("fedmkt", 2)) == 2
    assert all(calls.count((c["name"], 1)) == 1 for c in CELLS)
    before = len(calls)
    run_grid(grid, tmp_path / "runs", questions_loader=lambda config: mmlu)
    assert len(calls) == before  # all finished: nothing runs again

    metrics = {c["name"]: json.loads((grid_dir / c["name"] / "metrics.json").read_text()) for c in CELLS}
    assert len(metrics["fedmkt"]["rounds"]) == 2
    assert set(metrics["standalone"]["rounds"][0]["evaluation"]) == {"stem", "hum"}
    assert set(metrics["centralized"]["rounds"][0]["evaluation"]) == {"server"}
    assert "server" not in metrics["llm2slm"]["rounds"][0]["evaluation"]
    for record in metrics["hetero"]["rounds"]:  # same tokenizer: everything aligns, selected or not
        assert record["aligned_fraction"]["hum"]["server"] == 1.0
        assert record["aligned_fraction"]["server"]["hum"] == 1.0

    report = (grid_dir / "report.md").read_text()
    for text in ("## LLM (server)", "## SLMs (clients)", "| Zero-Shot |", "| Centralized |", "| LLM2SLM |",
                 "| Standalone |", "SLM stem beats standalone", "LLM matches centralized", "LLM beats its zero-shot",
                 "tiny:gemma3-270m (1 layers)", "## DualMinCE selection per round"):
        assert text in report, text
    pngs = sorted(p.name for p in (grid_dir / "plots").glob("*.png"))
    assert "fedmkt-scores.png" in pngs and "fedmkt-selection.png" in pngs and "standalone-selection.png" not in pngs
    assert all((grid_dir / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_report_command_writes_elsewhere_and_single_runs(tmp_path, mmlu):
    from typer.testing import CliRunner

    from fedmkt.cli import app

    grid_dir = run_grid(write_grid(tmp_path, CELLS[2:4], name="small"), tmp_path / "runs",
                        questions_loader=lambda config: mmlu)
    out = tmp_path / "docs"
    result = CliRunner().invoke(app, ["report", str(grid_dir), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file() and (out / "plots" / "centralized-scores.png").is_file()
    result = CliRunner().invoke(app, ["report", str(grid_dir / "standalone")])
    assert result.exit_code == 0 and (grid_dir / "standalone" / "plots" / "scores.png").is_file()
    assert "## plots" in (grid_dir / "standalone" / "summary.md").read_text()


def test_bad_cells_are_named_before_anything_runs(tmp_path):
    bad = [CELLS[0], {"name": "oops", "config": {"fedmkt": {"method": "magic"}}}]
    with pytest.raises(ConfigError, match=r"cells.1.*oops.*fedmkt.method"):
        load_grid(write_grid(tmp_path, bad))
    with pytest.raises(ConfigError, match="unique"):
        load_grid(write_grid(tmp_path, [CELLS[0], CELLS[0]]))
    assert not (tmp_path / "runs").exists()


def test_a_changed_cell_is_not_overwritten(tmp_path, mmlu):
    grid = write_grid(tmp_path, [CELLS[2]])
    grid_dir = run_grid(grid, tmp_path / "runs", questions_loader=lambda config: mmlu)
    saved = (grid_dir / "standalone" / "metrics.json").read_text()
    changed = [{**CELLS[2], "config": {"fedmkt": {"method": "standalone", "private_epochs": 2}}}]
    with pytest.raises(ConfigError, match="different config"):
        run_grid(write_grid(tmp_path, changed), tmp_path / "runs", questions_loader=lambda config: mmlu)
    assert (grid_dir / "standalone" / "metrics.json").read_text() == saved


def test_zero_shot_scores_are_shared_between_cells(tmp_path, mmlu, monkeypatch):
    from fedmkt.federation.roles import Party

    evaluated = []
    real = Party.evaluate

    def counting(self, questions):
        evaluated.append(self.name)
        return real(self, questions)

    monkeypatch.setattr(Party, "evaluate", counting)
    grid_dir = run_grid(write_grid(tmp_path, [CELLS[2], {**CELLS[2], "name": "again"}]), tmp_path / "runs",
                        questions_loader=lambda config: mmlu)
    first = json.loads((grid_dir / "standalone" / "metrics.json").read_text())
    second = json.loads((grid_dir / "again" / "metrics.json").read_text())
    assert first["zero_shot"] == second["zero_shot"] and set(first["zero_shot"]) == {"server", "stem", "hum"}
    # Round 0 once for the grid: the server and one of the two SmolLM2 clients (a fresh adapter changes nothing,
    # so both clients' zero-shot is one score) x 2 domains; round 1 of each cell: 2 clients x 2 domains.
    assert len(evaluated) == 2 * 2 + 2 * (2 * 2)


def test_a_grid_with_seeds_runs_each_cell_once_a_seed_and_reports_over_them(tmp_path, mmlu, monkeypatch):
    """Each seed its own run folder and split; the report pairs the cells seed by seed (two-level bootstrap),
    shows the mean and spread over seeds, the majority-class row, the ablation the grid names, and TOST
    verdicts against the grid's margin; question ids travel in every metrics.json. A cell may run on fewer
    of the grid's seeds; it is then compared on those only."""
    cells = [{"name": "fedmkt", "config": {}},
             {"name": "public-labels", "ablates": "fedmkt", "config": {"fedmkt": {"ce_weight": 1.0}}},
             {"name": "standalone", "seeds": [3], "config": {"fedmkt": {"method": "standalone"}}}]
    seeds_of = {"fedmkt": (3, 4), "public-labels": (3, 4), "standalone": (3,)}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "seeded", "seeds": [3, 4], "equivalence_margin": 0.5, "base": BASE,
                                    "cells": cells}))
    started = []
    real = Coordinator.run_round

    def record(self, round_no):
        started.append((self.store.root.parent.name, self.store.root.name))
        return real(self, round_no)

    monkeypatch.setattr(Coordinator, "run_round", record)
    grid_dir = run_grid(path, tmp_path / "runs", questions_loader=lambda config: mmlu)
    # Seed by seed: every cell of seed 3 before any of seed 4 (a grid stopped part way has whole seeds).
    assert started == [(c["name"], f"seed-{s}") for s in (3, 4) for c in cells if s in seeds_of[c["name"]]]
    assert not (grid_dir / "standalone" / "seed-4").exists()
    runs = {(c["name"], s): json.loads((grid_dir / c["name"] / f"seed-{s}" / "metrics.json").read_text())
            for c in cells for s in seeds_of[c["name"]]}
    assert {m["config"]["seed"] for (name, s), m in runs.items() if s == 3} == {3}
    ids = {s: runs[("fedmkt", s)]["question_ids"] for s in (3, 4)}
    assert ids[3] != ids[4]  # each seed draws its own evaluation questions
    assert all(len(v) == runs[("fedmkt", 3)]["split"]["evaluation"][d] for d, v in ids[3].items())
    assert runs[("fedmkt", 3)]["majority"]["mean"]["acc"] >= 0
    report = (grid_dir / "report.md").read_text()
    assert "| Majority class | - | fedmkt (public labels) |" in report
    assert " ±" in report  # mean ±sd over the two seeds
    ablation = [line for line in report.splitlines() if line.startswith("| FedMKT (fedmkt) against public-labels: ")]
    assert {line.split(" | ")[0].rsplit(": ", 1)[1] for line in ablation} >= {"LLM", "SLM stem"}
    assert all(", 2 seeds)" in line for line in ablation)
    against_standalone = [line for line in report.splitlines() if "beats standalone" in line]
    assert against_standalone and not any("seeds)" in line for line in against_standalone)  # seed 3 only
    verdicts = {line.rsplit(" | ", 1)[1].rstrip(" |") for line in report.splitlines() if ", 2 seeds)" in line}
    assert verdicts <= {"higher", "lower", "equivalent within ±0.5", "inconclusive"} and verdicts
    before = {k: (grid_dir / k[0] / f"seed-{k[1]}" / "metrics.json").stat().st_mtime_ns for k in runs}
    run_grid(path, tmp_path / "runs", questions_loader=lambda config: mmlu)  # every seed done: nothing runs
    assert before == {k: (grid_dir / k[0] / f"seed-{k[1]}" / "metrics.json").stat().st_mtime_ns for k in runs}


def test_a_grid_names_an_ablation_of_a_cell_it_lacks(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "base": BASE, "cells": [{"name": "a", "ablates": "nowhere"}]}))
    with pytest.raises(ConfigError, match="a ablates nowhere"):
        load_grid(path)
    path.write_text(yaml.safe_dump({"name": "g", "seeds": [1, 1], "base": BASE, "cells": [{"name": "a"}]}))
    with pytest.raises(ConfigError, match="seeds must be distinct"):
        load_grid(path)
    path.write_text(yaml.safe_dump({"name": "g", "seeds": [0, 1], "base": BASE,
                                    "cells": [{"name": "a", "seeds": [0, 2]}]}))
    with pytest.raises(ConfigError, match=r"cell a: seeds \[0, 2\] must be distinct seeds of the grid's \[0, 1\]"):
        load_grid(path)
