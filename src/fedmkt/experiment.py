"""Experiment grids: many runs (scenarios x methods) from one YAML file, resumable, then one report.

    name: paper-grid
    base:                 # RunConfig fields every cell shares
      data: {public_size: 24, bigbench_tasks: [social_iqa]}
    cells:
      - name: fedmkt-homogeneous
        scenario: homogeneous
        config: {fedmkt: {method: fedmkt}}      # merged over base (nested mappings merge)

Every cell is validated before anything runs (`fedmkt.grid.load_grid`). Each cell runs into
<grid dir>/<cell name>/, or with `seeds: [0, 1, 2]` once per seed into <cell name>/seed-<N>/ (each seed its
own split and initialisation): a finished run is skipped, an interrupted one resumes after its last
completed round, so re-running the same command after a crash only does what is left. A cell whose
saved config differs from the grid's is an error, never overwritten. Zero-shot scores are shared
between cells: the same model on the same questions is evaluated once per grid.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable


from fedmkt.config import ConfigError, RunConfig, load_config
from fedmkt.grid import load_grid
from fedmkt.data.questions import Question
from fedmkt.federation.local import LocalFederation
from fedmkt.federation.setup import load_questions
from fedmkt.progress import SILENT, Reporter
from fedmkt.report import write_grid_report


def _finished(cell_dir: Path, config: RunConfig) -> bool:
    metrics = cell_dir / "metrics.json"
    if not metrics.is_file():
        return False
    return len(json.loads(metrics.read_text()).get("rounds", [])) >= config.fedmkt.rounds


def _same_config(cell_dir: Path, config: RunConfig) -> bool:
    saved = cell_dir / "config.yaml"
    if not saved.is_file():
        return True
    # Read back through the schema: fields added since the cell ran take their defaults.
    try:
        theirs = load_config(saved)
    except ConfigError:
        return False
    return json.loads(theirs.model_dump_json()) == json.loads(config.model_dump_json())


def run_grid(path: Path, output_dir: Path | None = None, reporter: Reporter = SILENT,
             questions_loader: Callable[[RunConfig], list[Question]] = load_questions) -> Path:
    """Run every unfinished cell of the grid, then write its report; returns the grid folder."""
    grid, configs = load_grid(path)
    grid_dir = (output_dir or Path("runs")) / grid.name
    grid_dir.mkdir(parents=True, exist_ok=True)
    (grid_dir / "grid.yaml").write_text(path.read_text())
    loaded: dict[tuple, list[Question]] = {}
    # Seed by seed, every cell of a seed before the next seed: a grid stopped part way has whole seeds to compare.
    dirs = {cell.name: grid.run_dirs(grid_dir, cell.name) for cell in grid.cells}  # a cell's own seeds only
    order = [(cell, seed, dirs[cell.name][seed]) for seed in grid.seeds or [None] for cell in grid.cells
             if seed in dirs[cell.name]]
    for cell, seed, run_dir in order:
        where = cell.name + (f" seed {seed}" if seed is not None else "")
        config = configs[cell.name].model_copy(update={"output_dir": run_dir.parent, "run_name": run_dir.name,
                                                       **({"seed": seed} if seed is not None else {})})
        if not _same_config(run_dir, config):
            raise ConfigError(f"grid cell {where}: {run_dir} holds a run of a different config; "
                              f"move it away or rename the cell")
        if _finished(run_dir, config):
            reporter.message(f"{where}: done, skipped")
            continue
        resume = (run_dir / "metrics.json").is_file()
        if run_dir.exists() and not resume:
            shutil.rmtree(run_dir)  # started but no result saved yet (only initial adapters): start again
        reporter.message(f"{where} ({cell.scenario or 'grid cell'})", "heading")
        key = tuple(config.data.bigbench_tasks)
        if key not in loaded:
            loaded[key] = questions_loader(config)
        start = time.perf_counter()
        LocalFederation(config, reporter=reporter, questions=loaded[key], resume=resume,
                        zero_shot_cache=grid_dir / "zero_shot_cache.json").run()
        reporter.message(f"{where}: {time.perf_counter() - start:.0f}s")
    report = write_grid_report(grid_dir, grid)
    reporter.message(f"grid done: {report}", "success")
    return grid_dir
