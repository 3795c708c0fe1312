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
    from fedmkt.config import parse_config
    from fedmkt.data.splits import federated_split

    config = parse_config({"seed": seed, "clients": [{"name": "none"}], "data": {"public_size": n, "eval_domains": []}})
    return federated_split(config).public


def record(name: str, rows: list[dict]) -> None:
    """Print rows and keep them as JSON for the summary table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print(json.dumps(row))
