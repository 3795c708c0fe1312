"""The server's side of FedMKT rounds, over any transport: in-process calls or Flower messages.

A transport maps {client name: payload} for one phase to {client name: reply or ClientFailure}. A
client that fails a phase (error, timeout, corrupted packet) is dropped from the rest of that round
and the round completes with the others; the run records who was dropped and why. After every round
the coordinator writes the round's adapters, metrics and a checkpoint (server adapter, round number,
RNG state) so that `resume` continues after a crash with nothing lost.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import yaml
from rich.console import Console

from fedmkt.config import RunConfig
from fedmkt.data.splits import FederatedSplit
from fedmkt.federation import protocol as proto
from fedmkt.federation.protocol import ClientFailure
from fedmkt.federation.roles import Party, Peer, average_adapters
from fedmkt.knowledge import KnowledgePacket, PacketError
from fedmkt.models import peer_tokenizer
from fedmkt.report import primary_metric, write_summary


class Transport(Protocol):
    def call(self, phase: str, payloads: dict[str, dict]) -> dict[str, dict | ClientFailure]: ...


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)  # readers never see half a file


def _rng_state() -> bytes:
    return pickle.dumps((random.getstate(), np.random.get_state(), torch.get_rng_state()))


def _set_rng_state(blob: bytes) -> None:
    py, np_state, torch_state = pickle.loads(blob)
    random.setstate(py)
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)


def _mean(evaluation: dict) -> dict:
    """Adds "mean": each metric over the domains that report it, and "score": the mean of each domain's
    primary metric (accuracy, or ROUGE-L for free-text domains)."""
    scores = [v for k, v in evaluation.items() if k != "mean"]
    metrics = sorted({m for s in scores for m in s if m != "n"})
    mean = {m: float(np.mean([s[m] for s in scores if m in s])) for m in metrics}
    mean["score"] = float(np.mean([s[primary_metric(s)] for s in scores])) if scores else 0.0
    evaluation["mean"] = mean
    return evaluation


class Coordinator:
    def __init__(self, config: RunConfig, server: Party, split: FederatedSplit, transport: Transport, run_dir: Path,
                 console: Console | None = None, zero_shot_cache: Path | None = None):
        self.config, self.server, self.split, self.transport = config, server, split, transport
        self.run_dir = run_dir
        self.console = console or Console()
        self.clients = [c.name for c in config.clients]
        self.client_sources = {c.name: c.model.source for c in config.clients}
        self.metrics: dict = {}
        self.zero_shot_cache = zero_shot_cache

    # -- bookkeeping -------------------------------------------------------------------------
    def _client_tokenizer(self, name: str):
        return peer_tokenizer(self.client_sources[name])

    def _call(self, phase: str, payloads: dict[str, dict], dropped: dict[str, str]) -> dict[str, dict]:
        replies = self.transport.call(phase, payloads)
        good = {}
        for name in payloads:
            reply = replies.get(name, ClientFailure("no reply"))
            if isinstance(reply, ClientFailure):
                dropped[name] = f"{phase}: {reply}"
                self.console.print(f"[yellow]client {name} dropped from this round[/] ({phase}: {reply})")
            else:
                good[name] = reply
        return good

    def _checkpoint(self, round_no: int) -> None:
        ckpt = self.run_dir / "checkpoint"
        ckpt.mkdir(exist_ok=True)
        (ckpt / "server_adapter.tmp").write_bytes(proto.adapter_to_bytes(self.server.adapter_state()))
        os.replace(ckpt / "server_adapter.tmp", ckpt / "server_adapter.safetensors")
        (ckpt / "rng.tmp").write_bytes(_rng_state())
        os.replace(ckpt / "rng.tmp", ckpt / "rng.pkl")
        write_json(ckpt / "state.json", {"completed_round": round_no, "server_train_calls": self.server.train_calls})

    def _restore(self) -> int:
        ckpt = self.run_dir / "checkpoint"
        state = ckpt / "state.json"
        if not state.is_file():
            return 0
        saved = json.loads(state.read_text())
        round_no = int(saved["completed_round"])
        self.server.train_calls = int(saved["server_train_calls"])  # the shuffles go on as if never stopped
        self.server.load_adapter_state(proto.adapter_from_bytes((ckpt / "server_adapter.safetensors").read_bytes()))
        _set_rng_state((ckpt / "rng.pkl").read_bytes())
        self.metrics = json.loads((self.run_dir / "metrics.json").read_text())
        self.metrics["rounds"] = [r for r in self.metrics["rounds"] if r["round"] <= round_no]
        return round_no

    # -- phases ------------------------------------------------------------------------------
    def trained_parties(self) -> tuple[bool, list[str]]:
        """Whether the server and which clients a method trains: only they are evaluated after round 0."""
        method = self.config.fedmkt.method
        server = method == "centralized" or (method == "fedmkt" and self.config.fedmkt.llm_training)
        return server, [] if method == "centralized" else self.clients

    def _zero_shot_keys(self) -> dict[str, str]:
        """What fixes a zero-shot score: the model, the evaluation questions and how they are scored (a fresh
        LoRA adapter changes nothing: its B matrices start at zero)."""
        config = self.config
        specs = {"server": config.server, **{c.name: c.model for c in config.clients}}
        questions = {d: [q.uid for q in qs] for d, qs in self.split.evaluation.items()}
        common = [questions, config.data.eval_scoring, config.train.max_length]
        return {name: json.dumps([spec.model_dump(exclude={"device"}), *common], sort_keys=True)
                for name, spec in specs.items()}

    def _zero_shot(self) -> dict:
        """Round-0 evaluation, reusing scores of the same models on the same questions (experiment grids)."""
        if self.zero_shot_cache is None:
            return self.evaluate(0)
        cache = json.loads(self.zero_shot_cache.read_text()) if self.zero_shot_cache.is_file() else {}
        keys = self._zero_shot_keys()
        missing = {name for name, key in keys.items() if key not in cache}
        fresh = self.evaluate(0, parties=missing) if missing else {}
        for name in missing:
            if name in fresh:
                cache[keys[name]] = fresh[name]
        write_json(self.zero_shot_cache, cache)
        return {name: cache[keys[name]] for name in ["server", *self.clients] if keys[name] in cache}

    def evaluate(self, round_no: int, parties: set[str] | None = None) -> dict:
        server, clients = self.trained_parties() if round_no else (True, self.clients)
        if parties is not None:
            server, clients = server and "server" in parties, [c for c in clients if c in parties]
        out = {}
        if server:
            out["server"] = _mean({d: self.server.evaluate(qs) for d, qs in self.split.evaluation.items()})
        replies = self._call(proto.EVALUATE, {n: {"round": round_no} for n in clients}, {})
        for name in clients:
            if name in replies:
                out[name] = _mean(proto.evaluation_from_reply(replies[name]))
        return out

    def _timing(self, start: float, server_compute_before: float, client_compute: float) -> dict:
        """Round wall time against all parties' model compute; in-process clients run one after another,
        so wall/compute measures our overhead there."""
        wall = time.perf_counter() - start
        compute = self.server.clock.seconds - server_compute_before + client_compute
        return {"wall_s": wall, "model_compute_s": compute, "overhead_ratio": wall / max(compute, 1e-9)}

    def run_round(self, round_no: int) -> dict:
        if self.config.fedmkt.method == "fedmkt":
            return self._fedmkt_round(round_no)
        return self._baseline_round(round_no)

    def _baseline_round(self, round_no: int) -> dict:
        """Standalone, FedAvg or centralized training: the comparisons FedMKT is measured against."""
        cfg = self.config.fedmkt
        start = time.perf_counter()
        dropped: dict[str, str] = {}
        record: dict = {"round": round_no, "private_loss": {}, "selection": {}, "kd_loss": {}, "dropped": dropped}
        server_compute, client_compute = self.server.clock.seconds, 0.0
        if cfg.method == "centralized":
            pooled = list(self.split.public) + [q for name in self.clients for q in self.split.private[name]]
            record["private_loss"]["server"] = self.server.train_supervised(pooled, max(cfg.private_epochs, 1))
        else:
            trained = self._call(proto.PRIVATE, {n: {"round": round_no} for n in self.clients}, dropped)
            for name, reply in trained.items():
                client_compute += reply.get("compute_s", 0.0)
                record["private_loss"][name] = reply["private_loss"]
            if cfg.method == "fedavg":
                client_compute += self._average_adapters(round_no, list(trained), dropped)
        record["timing"] = self._timing(start, server_compute, client_compute)
        record["bytes"] = {"up_per_client": 0.0, "down": 0.0}
        return record

    def _average_adapters(self, round_no: int, names: list[str], dropped: dict[str, str]) -> float:
        """FedAvg of the named clients' LoRA adapters; returns their compute seconds."""
        if len(names) < 2:
            return 0.0
        sources = {self.client_sources[n] for n in names}
        if len(sources) != 1:
            raise ValueError(f"FedAvg of SLM adapters needs clients of one base model, got {sorted(sources)}")
        adapters = self._call(proto.GET_ADAPTER, {n: {"round": round_no} for n in names}, dropped)
        averaged = proto.adapter_to_bytes(average_adapters(
            [proto.adapter_from_bytes(r["adapter"]) for r in adapters.values()]))
        replies = self._call(proto.SET_ADAPTER, {n: {"round": round_no, "adapter": averaged} for n in adapters}, dropped)
        return sum(r.get("compute_s", 0.0) for r in [*adapters.values(), *replies.values()])

    def _fedmkt_round(self, round_no: int) -> dict:
        cfg = self.config.fedmkt
        start = time.perf_counter()
        dropped: dict[str, str] = {}
        wire = {"up": 0, "down": 0}
        record: dict = {"round": round_no, "private_loss": {}, "selection": {}, "aligned_fraction": {},
                        "kd_loss": {}, "dropped": dropped}
        server_compute = self.server.clock.seconds
        client_compute = 0.0

        shares = self._call(proto.SHARE, {n: {"round": round_no} for n in self.clients}, dropped)
        peers = []
        for name, reply in shares.items():
            client_compute += reply.get("compute_s", 0.0)
            try:
                packet = KnowledgePacket.from_bytes(reply["packet"])
                if packet.sender != name:
                    raise PacketError(f"packet from client '{name}' claims to come from '{packet.sender}'")
                peers.append(Peer(packet, self._client_tokenizer(name)))
                wire["up"] += len(reply["packet"])
                record["private_loss"][name] = reply.get("private_loss")
            except PacketError as error:
                dropped[name] = f"{proto.SHARE}: {error}"
                self.console.print(f"[yellow]client {name} dropped from this round[/] ({error})")
        if cfg.llm_training and peers:
            stats = self.server.absorb(peers)
            record["kd_loss"]["server"], record["selection"]["server"] = stats.loss, stats.selected
            record["aligned_fraction"]["server"] = stats.aligned_fraction
        down = self.server.share_knowledge().to_bytes()
        live = [p.packet.sender for p in peers]
        wire["down"] = len(down) * len(live)
        distilled = self._call(proto.DISTILL, {n: {"round": round_no, "packet": down,
                                                   "tokenizer": self.config.server.source} for n in live}, dropped)
        for name, reply in distilled.items():
            client_compute += reply.get("compute_s", 0.0)
            record["kd_loss"][name] = reply["loss"]
            record["selection"][name] = proto.unflatten(reply, "selected")
            record["aligned_fraction"][name] = proto.unflatten(reply, "aligned")
        if cfg.fedavg_slms:
            client_compute += self._average_adapters(round_no, list(distilled), dropped)
        record["timing"] = self._timing(start, server_compute, client_compute)
        record["bytes"] = {"up_per_client": wire["up"] / max(len(peers), 1), "down": wire["down"]}
        return record

    # -- whole run ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Server-side setup before round 1: a vocabulary map and alignments per client tokenizer."""
        for name in self.clients:
            self.server.sender_view(self._client_tokenizer(name))

    def run(self, resume: bool = False) -> Path:
        config = self.config
        self.prepare()
        completed = self._restore() if resume else 0
        started = time.perf_counter() - self.metrics.get("wall_s", 0.0)
        if completed == 0:
            (self.run_dir / "config.yaml").write_text(
                yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
            self.metrics = {"config": json.loads(config.model_dump_json()),
                            "split": {"public": len(self.split.public),
                                      "private": {k: len(v) for k, v in self.split.private.items()},
                                      "evaluation": {k: len(v) for k, v in self.split.evaluation.items()}},
                            "rounds": []}
            self.metrics["zero_shot"] = self._zero_shot()
            self._print("zero-shot", self.metrics["zero_shot"])
            write_json(self.run_dir / "metrics.json", self.metrics)
        else:
            self.console.print(f"resuming after round {completed}")
        for round_no in range(completed + 1, config.fedmkt.rounds + 1):
            self.console.rule(f"round {round_no}/{config.fedmkt.rounds}")
            record = self.run_round(round_no)
            record["evaluation"] = self.evaluate(round_no)
            self._print(f"after round {round_no}", record["evaluation"])
            self.server.save_adapter(self.run_dir / f"round-{round_no}" / "server")
            self.metrics["rounds"].append(record)
            self.metrics["wall_s"] = time.perf_counter() - started
            write_json(self.run_dir / "metrics.json", self.metrics)
            self._checkpoint(round_no)
        write_summary(self.run_dir, self.metrics)
        self.console.print(f"[bold green]done[/] in {self.metrics.get('wall_s', 0):.0f}s: {self.run_dir}")
        return self.run_dir

    def _print(self, title: str, evaluation: dict) -> None:
        cells = "  ".join(f"{name}={ev['mean']['score']:.3f}" for name, ev in evaluation.items())
        self.console.print(f"[bold]{title}[/] score: {cells}")
