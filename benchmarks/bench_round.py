"""One FedMKT round with the real models: wall time over model forward/backward/optimizer time.

Runs a reduced default federation (Gemma-3-270M server, two SmolLM2 clients) for two rounds;
evaluation is outside the round. Round 1 includes building the sequence alignments (cached after).
"""

from __future__ import annotations

import os
import tempfile

from benchmarks.common import record
from fedmkt.config import parse_config
from fedmkt.federation.local import LocalFederation

SIZE = int(os.environ.get("FEDMKT_BENCH_ROUND_SIZE", "24"))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config({"output_dir": tmp, "run_name": "bench",
                               "data": {"public_size": SIZE, "private_size": SIZE, "eval_size": 2},
                               "fedmkt": {"rounds": 2}})
        federation = LocalFederation(config)
        federation.prepare()
        rows = []
        for round_no in (1, 2):
            timing = federation.run_round(round_no).timing
            rows.append({"benchmark": "round_overhead", "round": round_no, "examples": SIZE,
                         "wall_s": round(timing.wall_s, 2), "model_compute_s": round(timing.model_compute_s, 2),
                         "wall_over_compute": round(timing.overhead_ratio, 3)})
    record("round", rows)


if __name__ == "__main__":
    main()
