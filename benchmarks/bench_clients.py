"""Many clients: bytes, server memory and server CPU per client, two-step exchange against one-step, and a
64-client federation on this machine (python -m benchmarks.bench_clients).

Server side (C = 2, 8, 32, 64): one FedMKT round of a real (tiny, random) Gemma-3 server against C clients
of one SmolLM2 tokenizer, whose packets are real knowledge of a tiny SmolLM2 on a public set of long
answers, each client's cross-entropies raised by its own random factors (raising a CE is always within
what its log-probs allow), so that selection spreads over the clients as it would. Each (C, exchange) runs
in a fresh process; its clients' bytes are made before the measurement starts. Reported per cell:
  up / down bytes per client   what crossed in the round, per client
  server peak above start      the round's peak resident memory (VmHWM, reset first) above what the
                               process held before it (server model, clients' bytes ready), without the
                               model's training step (whose memory does not depend on C): the soft
                               targets it would train on are built all the same
  server traced peak           the same round run again under tracemalloc: the peak of what Python and numpy
                               allocate in it (the xz compressor's ~94 MiB included), free of the allocator's
                               fragmentation that the resident figure carries
  server non-model CPU/client  the round's wall time (training step and the clients' work left out), per client
Federation (one process): 64 tiny clients of one family sampled 8 a round, private sets cut from MMLU by
an IID partition, two rounds: peak resident memory and wall time, with one shared base and with a copy of
the base per client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from benchmarks.common import record

COUNTS = [int(c) for c in os.environ.get("FEDMKT_BENCH_CLIENTS", "2,8,32,64").split(",")]
PUBLIC = int(os.environ.get("FEDMKT_BENCH_CLIENTS_PUBLIC", "32"))
ANSWER_WORDS = 60  # long answers: many loss positions per example, as instruction data has


def status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def public_file(folder: Path, clients: int) -> Path:
    rng = np.random.default_rng(0)
    words = "the a model client server learns knows data round answer text token long short".split()
    rows = [{"prompt": f"Question {i}: explain item {i}.", "response": " ".join(rng.choice(words, ANSWER_WORDS))}
            for i in range(PUBLIC + 2 * clients)]
    path = folder / "public.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(folder: Path, clients: int, exchange: str):
    from fedmkt.config import parse_config

    public = public_file(folder, clients)
    return parse_config({
        "seed": 1, "output_dir": str(folder), "run_name": f"c{clients}-{exchange}",
        "server": {"source": "tiny:gemma3-270m"},
        "clients": {"count": clients, "template": {"model": {"source": "tiny:smollm2-135m-instruct"}},
                    "partition": {"data": {"source": str(public)}}},
        "data": {"public": {"source": str(public), "size": PUBLIC}, "evaluation": {}},
        "train": {"max_length": 160, "batch_size": 8},
        "fedmkt": {"exchange": exchange}})


class Clients:
    """C clients answering from one real packet, each with its own raised cross-entropies."""

    def __init__(self, knowledge, names: list[str], cfg, server_down: dict):
        from fedmkt.federation.protocol import Phase

        rng = np.random.default_rng(7)
        self.phase = Phase
        self.bits = cfg.fedmkt.logprob_bits
        self.packets, self.first = {}, {}
        for name in names:
            packet = knowledge.restricted(knowledge.example_ids)
            packet.sender, packet.ce = name, (knowledge.ce * (1 + rng.uniform(0, 0.5, len(knowledge.ce)))).astype(np.float32)
            packet.carried = None
            self.packets[name] = packet
            shown = packet.restricted([]) if cfg.fedmkt.two_step else packet
            self.first[name] = shown.to_bytes(self.bits, round_no=1, phase=Phase.SHARE.value)
        self.down = server_down
        self.seconds = 0.0  # spent making the clients' rows: theirs, not the server's

    def call(self, phase, payloads):
        from fedmkt.federation.protocol import uids_from_wire

        started = time.perf_counter()
        out = {}
        for name, payload in payloads.items():
            if phase == self.phase.SHARE:
                out[name] = {"packet": self.first[name], "private_loss": 1.0, "compute_s": 0.0, "phase": phase.value}
            elif phase == self.phase.ROWS:
                rows = self.packets[name].restricted(uids_from_wire(payload["uids"]))
                out[name] = {"packet": rows.to_bytes(self.bits, round_no=1, phase=phase.value), "compute_s": 0.0,
                             "phase": phase.value}
            elif phase == self.phase.DISTILL:
                self.down[name] = len(payload["packet"])
                out[name] = {"loss": 1.0, "selected.self": 1.0, "compute_s": 0.0, "phase": phase.value}
        if phase == self.phase.ROWS:
            self.seconds += time.perf_counter() - started
        return out


def server_cell(clients: int, exchange: str) -> dict:
    """One round in this process (run in a fresh one)."""
    from fedmkt.data.splits import federated_split
    from fedmkt.federation.methods import FedMKT, RoundContext
    from fedmkt.federation.setup import make_client, make_server
    from fedmkt.progress import SILENT

    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), clients, exchange)
        split = federated_split(cfg)
        server = make_server(cfg, split)
        donor = make_client(cfg, cfg.clients[0].name, split, None).party
        knowledge = donor.share_knowledge()
        names = [c.name for c in cfg.clients]
        down: dict = {}
        transport = Clients(knowledge, names, cfg, down)
        method = FedMKT(cfg, server, split)
        server.sender_alignment(donor.tokenizer)  # step (3) ahead of round 1, as Coordinator.prepare does
        server.share_knowledge()
        # The model's training step stays out: its memory and time do not depend on C. What it is given, every
        # public example's soft targets, is still built, as training would read them.
        server._train = lambda examples, epochs, what, targets, ce_weight: float(
            sum(len(targets(e)[0]) for e in examples))
        server.share_knowledge = lambda own=server.share_knowledge(): own  # (the model did not change)
        before = status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to what is held now
        started = time.perf_counter()
        rnd = RoundContext(1, transport, SILENT, method.new_record(1), server.public_hash, clients=names)
        method.train_round(rnd)
        wall = time.perf_counter() - started - transport.seconds
        peak = status_kib("VmHWM")
        assert not rnd.record.dropped, rnd.record.dropped
        tracemalloc.start()  # the same round again, every allocation Python and numpy make counted
        method.train_round(RoundContext(1, transport, SILENT, method.new_record(1), server.public_hash, clients=names))
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"clients": clients, "exchange": exchange, "public": PUBLIC,
                "positions_per_client": int(knowledge.offsets[-1]),
                "up_bytes_per_client": round(rnd.record.bytes.up_per_client),
                "down_bytes_per_client": round(sum(down.values()) / clients),
                "server_peak_above_start_mib": round((peak - before) / 1024, 1),
                "server_traced_peak_mib": round(traced / 2**20, 1),
                "server_non_model_cpu_per_client_ms": round(1000 * wall / clients, 1)}


def federation_cell(share_bases: bool) -> dict:
    from fedmkt.config import parse_config
    from fedmkt.federation.local import LocalFederation

    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config({"seed": 3, "run_name": "many", "output_dir": tmp, "server": {"source": "tiny:gemma3-270m"},
                            "data": {"public_size": 6, "eval_size": 3},
                            "train": {"max_length": 96, "batch_size": 3, "learning_rate": 5e-3},
                            "fedmkt": {"rounds": 2, "clients_per_round": 8, "evaluate_every": 2},
                            "clients": {"count": 64, "template": {"model": {"source": "tiny:smollm2-135m-instruct"}},
                                        "partition": {"data": {"source": "mmlu", "size": 128}}}})
        started = time.perf_counter()
        run_dir = LocalFederation(cfg, share_bases=share_bases).run()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return {"benchmark": "federation", "clients": 64, "per_round": 8, "rounds": 2, "shared_base": share_bases,
                "sampled_round_1": len(metrics["rounds"][0]["sampled"]),
                "peak_rss_mib": round(status_kib("VmHWM") / 1024), "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    if len(sys.argv) > 1:  # a child: one cell
        cell = (federation_cell(sys.argv[2] == "shared") if sys.argv[1] == "federation"
                else server_cell(int(sys.argv[1]), sys.argv[2]))
        print(json.dumps(cell))
        return
    rows = []
    for clients in COUNTS:
        for exchange in ("one_step", "two_step"):
            out = subprocess.run([sys.executable, "-m", "benchmarks.bench_clients", str(clients), exchange],
                                 check=True, capture_output=True, text=True).stdout
            rows.append({"benchmark": "server", **json.loads(out.strip().splitlines()[-1])})
            print(json.dumps(rows[-1]), flush=True)
    for clients in COUNTS:
        one, two = (next(r for r in rows if r["clients"] == clients and r["exchange"] == e)
                    for e in ("one_step", "two_step"))
        two["up_over_one_step"] = round(two["up_bytes_per_client"] / one["up_bytes_per_client"], 3)
        two["down_over_one_step"] = round(two["down_bytes_per_client"] / one["down_bytes_per_client"], 3)
    for how in ("shared", "copies"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_clients", "federation", how], check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    record("clients", rows)


if __name__ == "__main__":
    main()
