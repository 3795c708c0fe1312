"""What the server asks of clients, and the client side of each request, whatever carries it.

The local runner calls `ClientRuntime.handle` directly; the Flower ClientApp calls it on each
message. Payloads and replies are flat dicts of str / int / float / bytes (what a Flower
ConfigRecord carries); adapters travel as safetensors bytes.

Every request names its round. Flower may serve each message in a fresh process, so a client
keeps its latest adapter (and training step) in a store and picks it up; when the server repeats a
round after resuming from its checkpoint, the client starts again from its adapter after the round
before, so nothing is lost and nothing counted twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load, load_file, save

from fedmkt.data.questions import Question
from fedmkt.federation.roles import ClientParty, Peer
from fedmkt.knowledge import KnowledgePacket
from fedmkt.models import peer_tokenizer

SHARE = "train.share"  # private SFT, then knowledge on the public set -> packet bytes
PRIVATE = "train.private"  # private SFT only (standalone and FedAvg baselines)
DISTILL = "train.distill"  # absorb the LLM's packet -> statistics
EVALUATE = "evaluate"  # accuracy on the evaluation sets
GET_ADAPTER = "query.adapter"  # the LoRA adapter (FedAvg)
SET_ADAPTER = "train.adapter"  # replace the LoRA adapter (FedAvg result)
PHASES = (SHARE, PRIVATE, DISTILL, EVALUATE, GET_ADAPTER, SET_ADAPTER)


class ClientFailure(RuntimeError):
    """A client that errored, timed out or sent something unusable in a phase."""


def adapter_to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    return save({k: v.contiguous() for k, v in state.items()})


def adapter_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    return load(data)


class ClientRuntime:
    """One client: its party, evaluation sets and a store of its adapters.

    store/latest/<name>/    the adapter after the last phase that changed it, with state.json
                            (round, phase, training step): a fresh process picks up from here
    store/round-N/<name>/   the adapter after round N (N=0: as initialised): the run's record, and
                            where a repeated round starts from when the server resumes
    """

    def __init__(self, party: ClientParty, evaluation: dict[str, list[Question]], store: Path | None = None):
        self.party = party
        self.evaluation = evaluation
        self.store = store
        self.state = {"round": 0, "phase": "init", "step": 0}
        if store is not None and not (self._dir("round-0") / "adapter_model.safetensors").is_file():
            self._write(self._dir("round-0"))

    def _dir(self, kind: str) -> Path:
        return self.store / kind / self.party.name

    def _write(self, directory: Path) -> None:
        self.party.save_adapter(directory)
        tmp = directory / "state.tmp"
        tmp.write_text(json.dumps(self.state))
        tmp.replace(directory / "state.json")

    def _read(self, directory: Path) -> bool:
        if not (directory / "state.json").is_file():
            return False
        self.party.load_adapter_state(load_file(str(directory / "adapter_model.safetensors")))
        self.state = json.loads((directory / "state.json").read_text())
        self.party.train_calls = int(self.state["step"])
        return True

    def _sync(self, round_no: int, phase: str) -> None:
        """Bring the in-memory adapter to where this request expects it."""
        if self.store is None:
            return
        latest = self._dir("latest")
        if (latest / "state.json").is_file():
            stored = json.loads((latest / "state.json").read_text())
            if stored != self.state:
                self._read(latest)
        if phase in (SHARE, PRIVATE):  # a round's first phase
            done = (self.state["round"] == round_no - 1
                    and self.state["phase"] in ("distill", "private", "adapter", "init"))
            if not done:  # the server is repeating a round (it resumed): start from the round before
                self._read(self._dir(f"round-{round_no - 1}"))

    def _persist(self, round_no: int, phase: str, snapshot: bool) -> None:
        self.state = {"round": round_no, "phase": phase, "step": self.party.train_calls}
        if self.store is not None:
            self._write(self._dir("latest"))
            if snapshot:
                self._write(self._dir(f"round-{round_no}"))

    def handle(self, phase: str, payload: dict) -> dict:
        """Serve one request; the reply says how long the model computed ("compute_s")."""
        before = self.party.clock.seconds
        reply = self._serve(phase, payload)
        reply["compute_s"] = self.party.clock.seconds - before
        return reply

    def _serve(self, phase: str, payload: dict) -> dict:
        round_no = int(payload.get("round", 0))
        self._sync(round_no, phase)
        if phase == SHARE:
            loss = self.party.train_private()
            self._persist(round_no, "share", snapshot=False)
            return {"packet": self.party.share_knowledge().to_bytes(), "private_loss": float(loss)}
        if phase == PRIVATE:
            loss = self.party.train_private()
            self._persist(round_no, "private", snapshot=True)
            return {"private_loss": float(loss)}
        if phase == DISTILL:
            packet = KnowledgePacket.from_bytes(payload["packet"])
            stats = self.party.absorb([Peer(packet, peer_tokenizer(str(payload["tokenizer"])))])
            self._persist(round_no, "distill", snapshot=True)
            reply = {"loss": stats.loss}
            reply.update({f"selected.{k}": v for k, v in stats.selected.items()})
            reply.update({f"aligned.{k}": v for k, v in stats.aligned_fraction.items()})
            return reply
        if phase == EVALUATE:
            return {f"eval.{domain}.{metric}": float(value) for domain, questions in self.evaluation.items()
                    for metric, value in self.party.evaluate(questions).items()}
        if phase == GET_ADAPTER:
            return {"adapter": adapter_to_bytes(self.party.adapter_state())}
        if phase == SET_ADAPTER:
            self.party.load_adapter_state(adapter_from_bytes(payload["adapter"]))
            self._persist(round_no, "adapter", snapshot=True)
            return {}
        raise ClientFailure(f"unknown phase '{phase}'; known: {PHASES}")


def unflatten(reply: dict, prefix: str) -> dict[str, float]:
    return {k[len(prefix) + 1:]: v for k, v in reply.items() if k.startswith(prefix + ".")}


def evaluation_from_reply(reply: dict) -> dict:
    out: dict = {}
    for key, value in unflatten(reply, "eval").items():
        domain, metric = key.rsplit(".", 1)
        out.setdefault(domain, {})[metric] = value
    return out
