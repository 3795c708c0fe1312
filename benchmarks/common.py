"""Shared helpers of the benchmarks: timers, real tokenizers and a public set, result rows."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

RESULTS = Path(os.environ.get("FEDMKT_BENCH_OUT", Path(__file__).parent / "results"))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def public_questions(n: int, seed: int = 0):
    from fedmkt.data.mmlu import load_mmlu
    from fedmkt.data.splits import split_questions

    return split_questions(load_mmlu(), {}, n, 0, 1, [], seed).public


def record(name: str, rows: list[dict]) -> None:
    """Print rows and keep them as JSON for the summary table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print(json.dumps(row))
