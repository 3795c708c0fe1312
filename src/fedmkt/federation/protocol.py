"""What the server asks of clients, and the client side of each request, whatever carries it.

The local runner calls `ClientRuntime.handle` directly; the Flower ClientApp calls it on each
message. Payloads and replies are flat dicts of str / int / float / bytes (what a Flower
ConfigRecord carries); adapters travel as safetensors bytes.

Every request names its round. A client whose in-memory adapter is older than the round before
(a restarted process, or a server resuming from a checkpoint) reloads the adapter it stored after
that round, so nothing trained is lost.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load, load_file, save

from fedmkt.data.mmlu import Question
from fedmkt.federation.roles import ClientParty, Peer
from fedmkt.knowledge import KnowledgePacket
from fedmkt.models import load_tokenizer

SHARE = "train.share"  # private SFT, then knowledge on the public set -> packet bytes
DISTILL = "train.distill"  # absorb the LLM's packet -> statistics
EVALUATE = "evaluate"  # accuracy on the evaluation sets
GET_ADAPTER = "query.adapter"  # the LoRA adapter (FedAvg)
SET_ADAPTER = "train.adapter"  # replace the LoRA adapter (FedAvg result)
PHASES = (SHARE, DISTILL, EVALUATE, GET_ADAPTER, SET_ADAPTER)


class ClientFailure(RuntimeError):
    """A client that errored, timed out or sent something unusable in a phase."""


def adapter_to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    return save({k: v.contiguous() for k, v in state.items()})


def adapter_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    return load(data)


class ClientRuntime:
    """One client: its party, evaluation sets and a store of adapters by round."""

    def __init__(self, party: ClientParty, evaluation: dict[str, list[Question]], store: Path | None = None):
        self.party = party
        self.evaluation = evaluation
        self.store = store
        self.round = 0  # the last round whose adapter this process holds
        self._tokenizers: dict[str, object] = {}

    def _stored(self, round_no: int) -> Path | None:
        """Where this client's adapter after a round lives: <store>/round-N/<name>/ (peft format)."""
        return self.store / f"round-{round_no}" / self.party.name if self.store else None

    def _catch_up(self, round_no: int, phase: str) -> None:
        wanted = round_no - 1 if phase == SHARE else round_no
        if self.round == wanted or wanted <= 0:
            return
        path = self._stored(wanted)
        if path is not None and (path / "adapter_model.safetensors").is_file():
            self.party.load_adapter_state(load_file(str(path / "adapter_model.safetensors")))
            self.round = wanted

    def _save(self, round_no: int) -> None:
        self.round = round_no
        path = self._stored(round_no)
        if path is not None:
            self.party.save_adapter(path)

    def _tokenizer(self, source: str):
        if source not in self._tokenizers:
            self._tokenizers[source] = load_tokenizer(source)
        return self._tokenizers[source]

    def handle(self, phase: str, payload: dict) -> dict:
        """Serve one request; the reply says how long the model computed ("compute_s")."""
        before = self.party.clock.seconds
        reply = self._serve(phase, payload)
        reply["compute_s"] = self.party.clock.seconds - before
        return reply

    def _serve(self, phase: str, payload: dict) -> dict:
        round_no = int(payload.get("round", 0))
        self._catch_up(round_no, phase)
        if phase == SHARE:
            loss = self.party.train_private()
            return {"packet": self.party.share_knowledge().to_bytes(), "private_loss": float(loss)}
        if phase == DISTILL:
            packet = KnowledgePacket.from_bytes(payload["packet"])
            stats = self.party.absorb([Peer(packet, self._tokenizer(str(payload["tokenizer"])))])
            self._save(round_no)
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
            self._save(round_no)
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
