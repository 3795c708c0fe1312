"""Experiment grids: many runs (scenarios x methods) from one YAML file, resumable, then one report.

    name: paper-grid
    base:                 # RunConfig fields every cell shares
      data: {public_size: 24, bigbench_tasks: [social_iqa]}
    cells:
      - name: fedmkt-homogeneous
        scenario: homogeneous
        config: {fedmkt: {method: fedmkt}}      # merged over base (nested mappings merge)

Every cell is validated before anything runs. Each cell runs into <grid dir>/<cell name>/: a finished
cell is skipped, an interrupted one resumes after its last completed round, so re-running the same
command after a crash only does what is left. A cell whose saved config differs from the grid's is an
error, never overwritten. Zero-shot scores are shared between cells: the same model on the same
questions is evaluated once per grid.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.console import Console

from fedmkt.config import ConfigError, RunConfig, describe, parse_config, read_yaml_mapping


class CellSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    scenario: str = ""
    config: dict = Field(default_factory=dict)


class GridSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    base: dict = Field(default_factory=dict)
    cells: list[CellSpec] = Field(min_length=1)

    @field_validator("cells")
    @classmethod
    def _unique(cls, cells: list[CellSpec]) -> list[CellSpec]:
        names = [c.name for c in cells]
        if len(set(names)) != len(names):
            raise ValueError(f"cell names must be unique, got {names}")
        return cells


def merge(base: dict, override: dict) -> dict:
    """Nested mappings merge key by key; anything else in override replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_grid(path: Path) -> tuple[GridSpec, dict[str, RunConfig]]:
    try:
        grid = GridSpec.model_validate(read_yaml_mapping(path, "grid") or {})
    except ValidationError as error:
        raise ConfigError(f"invalid grid {path}: {describe(error)}") from None
    configs = {}
    for index, cell in enumerate(grid.cells):
        try:
            configs[cell.name] = parse_config(merge(grid.base, cell.config))
        except ConfigError as error:
            raise ConfigError(f"grid cell `cells.{index}` ({cell.name}): {error}") from None
    return grid, configs


def _finished(cell_dir: Path, config: RunConfig) -> bool:
    metrics = cell_dir / "metrics.json"
    if not metrics.is_file():
        return False
    return len(json.loads(metrics.read_text()).get("rounds", [])) >= config.fedmkt.rounds


def _same_config(cell_dir: Path, config: RunConfig) -> bool:
    saved = cell_dir / "config.yaml"
    if not saved.is_file():
        return True
    mine = json.loads(config.model_dump_json())
    return yaml.safe_load(saved.read_text()) == mine


def run_grid(path: Path, output_dir: Path | None = None, console: Console | None = None,
             questions_loader=None) -> Path:
    """Run every unfinished cell of the grid, then write its report; returns the grid folder."""
    from fedmkt.federation.local import LocalFederation, load_questions
    from fedmkt.report import write_grid_report

    console = console or Console()
    grid, configs = load_grid(path)
    grid_dir = (output_dir or Path("runs")) / grid.name
    grid_dir.mkdir(parents=True, exist_ok=True)
    (grid_dir / "grid.yaml").write_text(path.read_text())
    loaded: dict[tuple, list] = {}
    for cell in grid.cells:
        config = configs[cell.name].model_copy(update={"output_dir": grid_dir, "run_name": cell.name})
        cell_dir = grid_dir / cell.name
        if not _same_config(cell_dir, config):
            raise ConfigError(f"grid cell {cell.name}: {cell_dir} holds a run of a different config; "
                              f"move it away or rename the cell")
        if _finished(cell_dir, config):
            console.print(f"[dim]{cell.name}: done, skipped[/]")
            continue
        resume = (cell_dir / "metrics.json").is_file()
        if cell_dir.exists() and not resume:
            shutil.rmtree(cell_dir)  # started but no result saved yet (only initial adapters): start again
        console.rule(f"[bold]{cell.name}[/] ({cell.scenario or 'grid cell'})")
        key = tuple(config.data.bigbench_tasks)
        if key not in loaded:
            loaded[key] = questions_loader(config) if questions_loader else load_questions(config)
        start = time.perf_counter()
        LocalFederation(config, console=console, questions=loaded[key], resume=resume,
                        zero_shot_cache=grid_dir / "zero_shot_cache.json").run()
        console.print(f"{cell.name}: {time.perf_counter() - start:.0f}s")
    report = write_grid_report(grid_dir, grid)
    console.print(f"[bold green]grid done[/]: {report}")
    return grid_dir
