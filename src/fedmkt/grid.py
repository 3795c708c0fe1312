"""Experiment grids: many runs from one YAML file (run by fedmkt.experiment, reported by fedmkt.report).
A cell's config is the grid's `base` merged with the cell's own (nested mappings merge key by key)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from fedmkt.config import NAME_PATTERN, ConfigError, RunConfig, _Strict, describe, parse_config, read_yaml_mapping
from fedmkt.config_yaml import merge


class CellSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    scenario: str = ""
    config: dict = Field(default_factory=dict)
    ablates: str | None = Field(None, description="the cell this one ablates: the report compares every party the "
                                                  "two trained, seed by seed")
    seeds: list[int] | None = Field(None, min_length=1, description="run this cell on these of the grid's seeds only "
                                    "(a secondary cell on fewer seeds); null: every seed of the grid")


class GridSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    seeds: list[int] | None = Field(None, min_length=1, description="run every cell once per seed (each its own "
                                    "split and initialisation, in <cell>/seed-<N>/); null: the config's seed, in <cell>/")
    equivalence_margin: float | None = Field(None, gt=0, lt=1, description="the margin of the report's equivalence "
                                             "verdicts (TOST at 5%), fixed before the run; null: no equivalence test")
    base: dict = Field(default_factory=dict)
    cells: list[CellSpec] = Field(min_length=1)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and (len(set(seeds)) != len(seeds) or min(seeds) < 0):
            raise ValueError(f"seeds must be distinct and >= 0, got {seeds}")
        return seeds

    @field_validator("cells")
    @classmethod
    def _unique(cls, cells: list[CellSpec]) -> list[CellSpec]:
        names = [c.name for c in cells]
        if len(set(names)) != len(names):
            raise ValueError(f"cell names must be unique, got {names}")
        unknown = [f"{c.name} ablates {c.ablates}" for c in cells if c.ablates is not None and c.ablates not in names]
        if unknown:
            raise ValueError(f"a cell ablates a cell the grid does not have: {unknown}")
        return cells

    @model_validator(mode="after")
    def _cell_seeds_in_grid(self) -> "GridSpec":
        for cell in self.cells:
            if cell.seeds is None:
                continue
            outside = sorted(set(cell.seeds) - set(self.seeds or []))
            if outside or len(set(cell.seeds)) != len(cell.seeds):
                raise ValueError(f"cell {cell.name}: seeds {cell.seeds} must be distinct seeds of the grid's "
                                 f"{self.seeds}")
        return self

    def run_dirs(self, grid_dir: Path, cell: str) -> dict[int | None, Path]:
        """Each seed's run folder of a cell, in the grid's seed order (None: the one run of a grid without seeds)."""
        if self.seeds is None:
            return {None: grid_dir / cell}
        own = next(c.seeds for c in self.cells if c.name == cell)
        return {seed: grid_dir / cell / f"seed-{seed}" for seed in self.seeds if own is None or seed in own}


def load_grid(path: Path) -> tuple[GridSpec, dict[str, RunConfig]]:
    """A grid file and each cell's validated config (base merged with the cell's override; with `seeds`, the
    config of the first seed: experiment.py sets each seed's)."""
    try:
        grid = GridSpec.model_validate(read_yaml_mapping(path, "grid") or {})
    except ValidationError as error:
        raise ConfigError(f"invalid grid {path}: {describe(error)}") from None
    configs = {}
    for index, cell in enumerate(grid.cells):
        try:
            merged = merge(grid.base, cell.config)
            configs[cell.name] = parse_config({**merged, "seed": grid.seeds[0]} if grid.seeds else merged)
        except ConfigError as error:
            raise ConfigError(f"grid cell `cells.{index}` ({cell.name}): {error}") from None
    return grid, configs
