"""Experiment grids: many runs from one YAML file (run by fedmkt.experiment, reported by fedmkt.report).
A cell's config is the grid's `base` merged with the cell's own (nested mappings merge key by key)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator

from fedmkt.config import NAME_PATTERN, ConfigError, RunConfig, _Strict, describe, parse_config, read_yaml_mapping
from fedmkt.config_yaml import merge


class CellSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    scenario: str = ""
    config: dict = Field(default_factory=dict)


class GridSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
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


def load_grid(path: Path) -> tuple[GridSpec, dict[str, RunConfig]]:
    """A grid file and each cell's validated config (base merged with the cell's override)."""
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
