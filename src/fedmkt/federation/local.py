"""In-process FedMKT federation: the embedded default of `fedmkt run`.

Packets cross between parties as bytes (the same validated wire form Flower carries), so the local
run exercises exactly what a deployment exchanges. The run folder holds the resolved config,
metrics.json (rewritten atomically after every round), each round's LoRA adapters, and summary.md.
"""

from __future__ import annotations

import json
import os
import random
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import yaml
from rich.console import Console

from fedmkt.alignment.vocab import build_vocab_map
from fedmkt.config import RunConfig
from fedmkt.data.mmlu import load_mmlu
from fedmkt.data.splits import split_questions
from fedmkt.federation.roles import ClientParty, Party, Peer, average_adapters
from fedmkt.knowledge import KnowledgePacket
from fedmkt.models import load_model
from fedmkt.report import write_summary
from fedmkt.training import make_progress


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)  # readers never see half a file


def new_run_dir(config: RunConfig) -> Path:
    name = config.run_name or datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = config.output_dir / name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"run folder {run_dir} already exists and is not empty; choose another run_name")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _ship(packet: KnowledgePacket, stats: dict, key: str) -> KnowledgePacket:
    """Send a packet through its binary form, counting the bytes."""
    data = packet.to_bytes()
    stats.setdefault(key, 0)
    stats[key] += len(data)
    return KnowledgePacket.from_bytes(data)


class LocalFederation:
    def __init__(self, config: RunConfig, console: Console | None = None, questions=None):
        self.config = config
        self.console = console or Console()
        seed_everything(config.seed)
        split = split_questions(
            questions if questions is not None else load_mmlu(),
            {c.name: c.domains for c in config.clients},
            config.data.public_size, config.data.private_size, config.data.eval_size, config.data.eval_domains,
            config.seed)
        self.split = split
        self.progress = make_progress(disable=not self.console.is_terminal and os.environ.get("FEDMKT_PROGRESS") != "1")
        self.console.print(f"[bold]loading models[/] server={config.server.source} "
                           f"clients={[c.model.source for c in config.clients]}")
        common = dict(lora=config.lora, train=config.train, fedmkt=config.fedmkt, public=split.public,
                      progress=self.progress)
        self.server = Party("server", load_model(config.server, seed=config.seed), seed=config.seed, **common)
        self.clients = [
            ClientParty(c.name, load_model(c.model, seed=config.seed + 1 + i), seed=config.seed + 1 + i,
                        private=split.private[c.name], **common)
            for i, c in enumerate(config.clients)
        ]

        for party in self.parties:
            party.eval_scoring = config.data.eval_scoring

    @property
    def parties(self) -> list[Party]:
        return [self.server, *self.clients]

    def evaluate(self) -> dict:
        out = {}
        with self.progress:
            task = self.progress.add_task("evaluate", total=len(self.parties) * len(self.split.evaluation), info="")
            for party in self.parties:
                out[party.name] = {}
                for domain, questions in self.split.evaluation.items():
                    out[party.name][domain] = party.evaluate(questions)
                    self.progress.update(task, advance=1, info=f"{party.name}/{domain}")
                scores = list(out[party.name].values())
                out[party.name]["mean"] = {k: float(np.mean([s[k] for s in scores])) for k in ("acc", "acc_norm")}
        return out

    def _table(self, title: str, evaluation: dict) -> None:
        cells = "  ".join(f"{name}={ev['mean']['acc']:.3f}" for name, ev in evaluation.items())
        self.console.print(f"[bold]{title}[/] acc: {cells}")

    def prepare(self) -> float:
        """Vocabulary maps in both directions before round 1 (cached on disk for later runs)."""
        start = time.perf_counter()
        for client in self.clients:
            build_vocab_map(client.tokenizer, self.server.tokenizer)
            build_vocab_map(self.server.tokenizer, client.tokenizer)
        return time.perf_counter() - start

    def run_round(self, round_no: int) -> dict:
        cfg = self.config.fedmkt
        clocks = {p.name: p.clock.seconds for p in self.parties}
        start = time.perf_counter()
        wire: dict[str, int] = {}
        record: dict = {"round": round_no, "private_loss": {}, "selection": {}, "aligned_fraction": {},
                        "kd_loss": {}}
        with self.progress:
            for client in self.clients:
                record["private_loss"][client.name] = client.train_private()
            uploads = [Peer(_ship(c.share_knowledge(), wire, "up"), c.tokenizer) for c in self.clients]
            if cfg.llm_training:
                stats = self.server.absorb(uploads)
                record["kd_loss"]["server"], record["selection"]["server"] = stats.loss, stats.selected
                record["aligned_fraction"]["server"] = stats.aligned_fraction
            download = _ship(self.server.share_knowledge(), wire, "down")
            for client in self.clients:
                stats = client.absorb([Peer(download, self.server.tokenizer)])
                record["kd_loss"][client.name], record["selection"][client.name] = stats.loss, stats.selected
                record["aligned_fraction"][client.name] = stats.aligned_fraction
            if cfg.fedavg_slms and len(self.clients) > 1:
                sources = {c.source for c in self.clients}
                if len(sources) != 1:
                    raise ValueError(f"field `fedmkt.fedavg_slms`: clients must share one base model, got {sorted(sources)}")
                averaged = average_adapters([c.adapter_state() for c in self.clients])
                for client in self.clients:
                    client.load_adapter_state(averaged)
        wall = time.perf_counter() - start
        compute = sum(p.clock.seconds - clocks[p.name] for p in self.parties)
        record["timing"] = {"wall_s": wall, "model_compute_s": compute, "overhead_ratio": wall / max(compute, 1e-9)}
        record["bytes"] = {"up_per_client": wire.get("up", 0) / max(len(self.clients), 1),
                           "down": wire.get("down", 0)}
        return record

    def run(self) -> Path:
        config = self.config
        run_dir = new_run_dir(config)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False))
        metrics: dict = {"config": json.loads(config.model_dump_json()),
                         "split": {"public": len(self.split.public),
                                   "private": {k: len(v) for k, v in self.split.private.items()},
                                   "evaluation": {k: len(v) for k, v in self.split.evaluation.items()}},
                         "rounds": []}
        started = time.perf_counter()
        metrics["prepare_s"] = self.prepare()
        self.console.print(f"vocabulary maps ready in {metrics['prepare_s']:.1f}s")
        metrics["zero_shot"] = self.evaluate()
        self._table("zero-shot", metrics["zero_shot"])
        _write_json(run_dir / "metrics.json", metrics)
        for round_no in range(1, config.fedmkt.rounds + 1):
            self.console.rule(f"round {round_no}/{config.fedmkt.rounds}")
            record = self.run_round(round_no)
            record["evaluation"] = self.evaluate()
            self._table(f"after round {round_no}", record["evaluation"])
            for party in self.parties:
                party.save_adapter(run_dir / f"round-{round_no}" / party.name)
            metrics["rounds"].append(record)
            metrics["wall_s"] = time.perf_counter() - started
            _write_json(run_dir / "metrics.json", metrics)
        write_summary(run_dir, metrics)
        self.console.print(f"[bold green]done[/] in {metrics['wall_s']:.0f}s: {run_dir}")
        return run_dir
