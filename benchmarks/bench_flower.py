"""A FedMKT round on Flower against the same round run locally: wall time over model compute, and model loads.

One reduced default federation (Gemma-3-270M server, two SmolLM2 clients, FEDMKT_BENCH_FLOWER_SIZE public
and private examples, one round), run three ways in one go on this machine:
- local: `LocalFederation`, every party in this process (clients one after another);
- flower, resident: a SuperLink and two SuperNodes on loopback (tests/flower_cluster.py), each SuperNode
  served by one `fedmkt flower-clientapp` process (`--isolation process`);
- flower, per message: the same with Flower's default isolation, a `flwr-clientapp` process per message.
Each row: the round's wall time and all parties' model compute (forward, backward, optimizer), as the
run's metrics.json records them, their ratio, and the client builds (model loads) per client in the run,
counted from the nodes' loads.jsonl. Every party computes with FEDMKT_BENCH_FLOWER_THREADS torch threads
(default 1), in every way: on one machine the Flower parties are separate processes that would otherwise
each take all cores and slow one another down, which measures the machine, not Flower. On Flower the two
clients then run at the same time on two cores, as on two machines, locally one after the other, so the
Flower ratio may fall below the local one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import record
from fedmkt.config import parse_config
from fedmkt.federation.local import LocalFederation

SIZE = int(os.environ.get("FEDMKT_BENCH_FLOWER_SIZE", "16"))
THREADS = os.environ.get("FEDMKT_BENCH_FLOWER_THREADS", "1")
CLIENTS = ("client-products", "client-movies")  # the default config's


def bench_config(out: Path, name: str) -> dict:
    from fedmkt.config import load_config

    default = load_config(None).model_dump(mode="json")
    return dict(default, output_dir=str(out), run_name=name,
                data=dict(default["data"], public_size=SIZE, private_size=SIZE, eval_size=2),
                fedmkt=dict(default["fedmkt"], rounds=1))


def row(way: str, run_dir: Path, nodes: Path | None, started: float) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    timing = metrics["rounds"][0]["timing"]
    loads = {c: len((nodes / c / run_dir.name / "loads.jsonl").read_text().splitlines()) for c in CLIENTS} if nodes else {}
    return {"benchmark": "flower_round", "way": way, "examples": SIZE, "round_wall_s": round(timing["wall_s"], 2),
            "model_compute_s": round(timing["model_compute_s"], 2),
            "wall_over_compute": round(timing["overhead_ratio"], 3),
            "model_loads_per_client": loads or None,  # counted on Flower nodes only
            "threads_per_party": int(THREADS), "run_s": round(time.perf_counter() - started, 1)}


def on_flower(tmp: Path, resident: bool) -> dict:
    from tests.flower_cluster import FlowerCluster, finished

    way = "flower, resident clientapp" if resident else "flower, a clientapp process per message"
    home = tmp / ("resident" if resident else "per-message")
    home.mkdir()
    cluster = FlowerCluster(home, resident=resident)
    try:
        cluster.start_superlink()
        for client in CLIENTS:
            cluster.start_supernode(client)
        started = time.perf_counter()
        config = bench_config(home / "runs", "flower")
        cluster.run(config, phase_timeout=1800, join_timeout=300)
        cluster.wait(finished(home / "runs" / "flower", 1), 3600, way)
        return row(way, home / "runs" / "flower", home / "nodes", started)
    finally:
        cluster.stop()


def main() -> None:
    import torch

    torch.set_num_threads(int(THREADS))
    os.environ["OMP_NUM_THREADS"] = THREADS  # the cluster's processes inherit it
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        run_dir = LocalFederation(parse_config(bench_config(tmp / "local", "local"))).run()
        rows = [row("local", run_dir, None, started)]
        print(rows[-1], flush=True)
        for resident in (True, False):
            rows.append(on_flower(tmp, resident))
            print(rows[-1], flush=True)
    local = rows[0]["wall_over_compute"]
    for r in rows:
        r["ratio_to_local"] = round(r["wall_over_compute"] / local, 3)
    record("flower", rows)


if __name__ == "__main__":
    main()
