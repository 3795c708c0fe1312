"""The one tiny federation every test builds on: random miniatures of the packaged model families with
their real tokenizers, a handful of MMLU questions, sizes that run in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path


def tiny_base(**fedmkt) -> dict:
    """RunConfig fields of a two-client tiny federation (no run folder named)."""
    return {
        "seed": 3,
        "server": {"source": "tiny:gemma3-270m"},
        "clients": [{"name": "stem", "model": {"source": "tiny:smollm2-135m-instruct"}, "domains": ["stem"]},
                    {"name": "hum", "model": {"source": "tiny:smollm2-135m-instruct"}, "domains": ["humanities"]}],
        "data": {"public_size": 6, "private_size": 6, "eval_size": 3},
        "train": {"max_length": 96, "batch_size": 3, "learning_rate": 5e-3},
        "fedmkt": {"rounds": 2, **fedmkt},
    }


def tiny_config(out: Path, run_name: str = "t", **fedmkt) -> dict:
    """tiny_base with its run folder `out/run_name`; keyword arguments override `fedmkt` fields."""
    return {**tiny_base(**fedmkt), "run_name": run_name, "output_dir": str(out)}
