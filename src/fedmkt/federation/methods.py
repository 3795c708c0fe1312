"""Federated methods as classes over one round loop: FedMKT (LLM2SLM as its option) and the baselines.

The coordinator's loop (`Coordinator.run`) is shared; a method fills in what one round trains, as
Flower's strategies fill in `configure_train` / `aggregate_train` under `Strategy.start`. A method
talks to clients only through `RoundContext.call`, which validates every reply and drops a client
that fails (with the reason in the round's record) so the round goes on with the others.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from fedmkt.config import RunConfig
from fedmkt.method_names import CENTRALIZED, FEDAVG, STANDALONE, FEDMKT as FEDMKT_INFO
from fedmkt.data.splits import FederatedSplit
from fedmkt.federation.protocol import (ClientFailure, Phase, PrivateReply, Reply, Request, adapter_from_bytes,
                                        adapter_to_bytes, reply_from_wire, uids_to_wire)
from fedmkt.federation.roles import Party, ReceivedPacket, average_adapters
from fedmkt.knowledge import KnowledgePacket, PacketError
from fedmkt.models import peer_tokenizer
from fedmkt.progress import Reporter
from fedmkt.selection import SenderFailure, AlignedKnowledge, rows_won_by, won_examples
from fedmkt.records import RoundRecord, Timing, WireBytes, bounded_text, shown


DECODE_THREADS = 4  # packets decoded at once on the server (an xz decoder holds ~9 MiB; the 2-core CI machine
# gains from 2)


class Transport(Protocol):
    """Carries one phase to clients: {client: request in wire form} -> {client: wire reply or ClientFailure}."""

    def call(self, phase: Phase, payloads: dict[str, dict]) -> dict[str, dict | ClientFailure]: ...


def call_clients(transport: Transport, phase: Phase, requests: dict[str, Request],
                 dropped: dict[str, str], reporter: Reporter, public_set: str | None = None) -> dict[str, Reply]:
    """One phase on the named clients: replies validated in one place; a failure drops its client. Every
    request carries the server's public-set hash, which a client holding another set refuses."""
    for request in requests.values():
        request.public_set = public_set
    wire = transport.call(phase, {name: request.to_wire() for name, request in requests.items()})
    for name in set(wire) - set(requests):
        reporter.message(f"a reply from {shown(name)}, which was not asked, is ignored", "warning")
    replies = {}
    for name in requests:
        try:
            reply = wire.get(name, ClientFailure("no reply"))
            if isinstance(reply, ClientFailure):
                raise reply
            replies[name] = reply_from_wire(phase, reply)
        except ClientFailure as failure:
            record_drop(dropped, reporter, name, phase, str(failure))
    return replies


def record_drop(dropped: dict[str, str], reporter: Reporter, name: str, phase: Phase, reason: str) -> None:
    """A client's drop, its reason bounded to one short line (whatever a hostile client made it say)."""
    dropped[name] = bounded_text(f"{phase.value}: {reason}")
    reporter.message(f"client {name} dropped from this round ({dropped[name]})", "warning")


class RoundFailed(RuntimeError):
    """Too few of a round's clients replied (`fedmkt.min_clients`): the run stops, the reason recorded."""


class RoundContext:
    """One round in progress: the clients it asks (sampled), the record it fills, and client calls that count
    compute and drops."""

    def __init__(self, number: int, transport: Transport, reporter: Reporter, record: RoundRecord,
                 public_set: str | None = None, clients: list[str] | None = None, min_clients: int = 1):
        self.number, self.transport, self.reporter, self.record = number, transport, reporter, record
        self.public_set = public_set
        self.clients = clients or []  # this round's sampled clients, in config order
        self.min_clients = min_clients
        self.client_compute_s = 0.0
        self.started = time.perf_counter()
        self.expected_s: float | None = None  # the previous round's training time: what this one's will take
        self.after_s = 0.0  # the estimated time of the rest of the run after this round's training

    def call(self, phase: Phase, requests: dict[str, Request]) -> dict[str, Reply]:
        replies = call_clients(self.transport, phase, requests, self.record.dropped, self.reporter, self.public_set)
        self.client_compute_s += sum(r.compute_s for r in replies.values())
        self.reporter.message(self.progress_line(f"{phase.value} done"))
        return replies

    def progress_line(self, what: str) -> str:
        """A line a log file can carry: elapsed time, and from round 2 on what is likely left (from the last
        round's training and evaluation times, each apart)."""
        elapsed = time.perf_counter() - self.started
        line = f"round {self.number}: {what} after {elapsed:.0f}s"
        if self.expected_s is not None:
            left = max(self.expected_s - elapsed, 0.0)
            line += f"; about {left:.0f}s left in the round's training, {left + self.after_s:.0f}s in the run"
        return line

    def require(self, replied: list[str], phase: Phase) -> None:
        """RoundFailed where fewer than `min_clients` of the sampled clients replied to the round's first phase."""
        if len(replied) < self.min_clients:
            dropped = "; ".join(f"{name}: {why}" for name, why in self.record.dropped.items())
            raise RoundFailed(f"round {self.number}: {len(replied)} of {len(self.clients)} clients asked replied to "
                              f"{phase.value}, fedmkt.min_clients is {self.min_clients}"
                              + (f" (dropped: {bounded_text(dropped, 600)})" if dropped else ""))

    def ask(self, phase: Phase, names: list[str]) -> dict[str, Reply]:
        """The same plain request (just the round) to every named client."""
        return self.call(phase, {n: Request(self.number) for n in names})

    def took_private(self, name: str, reply: PrivateReply) -> None:
        """Record a client's step (1): its loss, or under DP-SGD the epsilon it reports having spent."""
        self.record.private_loss[name] = reply.private_loss
        if not math.isnan(reply.epsilon):  # a DP client
            self.record.privacy[name] = {"epsilon": reply.epsilon, "delta": reply.delta, "stopped": reply.budget_stop}
            self.reporter.message(f"client {name}: epsilon {reply.epsilon:.3f} spent at delta {reply.delta:.3g}"
                                  + ("; its budget stopped its private training" if reply.budget_stop else ""),
                                  "warning" if reply.budget_stop else "info")

    def drop(self, name: str, phase: Phase, reason: str) -> None:
        record_drop(self.record.dropped, self.reporter, name, phase, reason)

    def timing(self, server_compute_s: float) -> Timing:
        """Round wall time against all parties' model compute; in-process clients run one after another,
        so wall/compute measures our overhead there."""
        wall = time.perf_counter() - self.started
        compute = server_compute_s + self.client_compute_s
        return Timing(wall, compute, wall / max(compute, 1e-9))


def fine_tune_privately(rnd: RoundContext, clients: list[str]) -> list[str]:
    """Step (1) alone on the named clients; records their losses and returns those that answered."""
    for name, reply in rnd.ask(Phase.PRIVATE, clients).items():
        rnd.took_private(name, reply)
    rnd.require(list(rnd.record.private_loss), Phase.PRIVATE)
    return list(rnd.record.private_loss)


class Method(ABC):
    """What one round trains, and which parties it trains (only they are evaluated after round 0)."""

    def __init__(self, config: RunConfig, server: Party, split: FederatedSplit):
        self.config, self.server, self.split = config, server, split
        self.clients = [c.name for c in config.clients]
        self.client_sources = {c.name: c.model.source for c in config.clients}

    @property
    def trains_server(self) -> bool:
        return False

    @property
    def trained_clients(self) -> list[str]:
        return self.clients

    def new_record(self, round_no: int) -> RoundRecord:
        return RoundRecord(round=round_no)

    @abstractmethod
    def train_round(self, rnd: RoundContext) -> None:
        """Run one round's training, filling rnd.record (losses, selection, bytes)."""

    def average_client_adapters(self, rnd: RoundContext, names: list[str]) -> None:
        """FedAvg of the named clients' LoRA adapters (clients of one base model)."""
        if len(names) < 2:
            return
        sources = {self.client_sources[n] for n in names}
        if len(sources) != 1:
            raise ValueError(f"FedAvg of SLM adapters needs clients of one base model, got {sorted(sources)}")
        adapters = rnd.ask(Phase.GET_ADAPTER, names)
        averaged = adapter_to_bytes(average_adapters([adapter_from_bytes(r.adapter) for r in adapters.values()]))
        rnd.call(Phase.SET_ADAPTER, {n: Request(rnd.number, adapter=averaged) for n in adapters})


class FedMKT(Method):
    """Algorithm 1 of Fan et al. (2025): clients share knowledge up (steps 1-2), the server aligns, selects
    and distills (3-5) unless it is frozen (LLM2SLM), sends its knowledge down (6), clients distill (7);
    optionally FedAvg of the SLM adapters (homogeneous clients)."""

    @property
    def trains_server(self) -> bool:
        return self.config.fedmkt.llm_training

    def new_record(self, round_no: int) -> RoundRecord:
        return RoundRecord(round=round_no, aligned_fraction={})

    @property
    def two_step(self) -> bool:
        return self.config.fedmkt.two_step

    def _decoded(self, blobs: dict[str, bytes]) -> dict[str, KnowledgePacket | Exception]:
        """Every client's packet decoded at once, in threads (xz and numpy release the GIL); a failure is kept
        as that client's."""
        def decode(data: bytes) -> KnowledgePacket | Exception:
            try:
                return KnowledgePacket.from_bytes(data, max_bytes=self.config.fedmkt.max_packet_bytes,
                                                  max_decoded=self.config.fedmkt.max_decoded_bytes)
            except Exception as error:
                return error

        if len(blobs) < 2:
            return {name: decode(data) for name, data in blobs.items()}
        with ThreadPoolExecutor(max_workers=min(len(blobs), DECODE_THREADS)) as pool:
            return dict(zip(blobs, pool.map(decode, blobs.values())))

    def _take_in(self, name: str, packet: KnowledgePacket | Exception, rnd: RoundContext,
                 phase: Phase) -> AlignedKnowledge:
        """One client's decoded packet checked (nothing in it trusted) and mapped: PacketError names what is wrong."""
        if isinstance(packet, Exception):
            raise packet
        if packet.sender != name:
            raise PacketError(f"packet from client '{name}' claims to come from {shown(packet.sender)}")
        return self.server.receive(ReceivedPacket(packet, peer_tokenizer(self.client_sources[name])), rnd.number, phase.value)

    def _received(self, rnd: RoundContext) -> tuple[list[AlignedKnowledge], int]:
        """Steps (1)-(3): the clients' packets (two-step: their cross-entropies only), each checked and aligned
        on its own, so that whatever is wrong with one (bytes, size, tokenizer, public set, CE claims,
        alignment) drops that client only."""
        senders, up = [], 0
        replies = rnd.ask(Phase.SHARE, rnd.clients)
        packets = self._decoded({name: reply.packet for name, reply in replies.items()})
        for name, reply in replies.items():
            try:
                senders.append(self._take_in(name, packets[name], rnd, Phase.SHARE))
                up += len(reply.packet)
                rnd.took_private(name, reply)
            except PacketError as error:
                rnd.drop(name, Phase.SHARE, str(error))
            except Exception as error:  # the server could not take this client's knowledge in: drop it alone
                rnd.drop(name, Phase.SHARE, f"{type(error).__name__}: {error}")
        rnd.require([s.packet.sender for s in senders], Phase.SHARE)
        return senders, up

    def _with_won_rows(self, rnd: RoundContext, senders: list[AlignedKnowledge]) -> tuple[list[AlignedKnowledge], int]:
        """Two-step upload, step 2: each sender is asked for the top-K rows of the examples selection takes from
        it, which must come with the cross-entropies it sent first. A sender whose rows fail is dropped, which
        changes the selection: the others are asked again until every selected row is in (as one-step would
        have selected without that sender)."""
        up = 0
        while senders:
            names = [s.packet.sender for s in senders]
            won = won_examples(self.server.public_uids, self.server.select(senders), names)
            missing = {s.packet.sender: won[s.packet.sender] for s in senders if _lacks(s.packet, won[s.packet.sender])}
            if not missing:
                break
            replies = rnd.call(Phase.ROWS, {n: Request(rnd.number, uids=uids_to_wire(u)) for n, u in missing.items()})
            packets = self._decoded({name: reply.packet for name, reply in replies.items()})
            arrived: dict[str, AlignedKnowledge] = {}
            for first in [s for s in senders if s.packet.sender in missing]:
                name = first.packet.sender
                if name not in replies:  # it failed the call (dropped there)
                    continue
                try:
                    rows = self._take_in(name, packets[name], rnd, Phase.ROWS)
                    if not (np.array_equal(rows.packet.example_ids, first.packet.example_ids)
                            and np.array_equal(rows.packet.ce, first.packet.ce)):
                        raise PacketError("its cross-entropies differ from those it sent in the first step")
                    if _lacks(rows.packet, missing[name]):
                        raise PacketError(f"it was asked for the rows of {len(missing[name])} examples and left some out")
                    arrived[name] = rows
                    up += len(replies[name].packet)
                except Exception as error:  # its rows are unusable: drop it alone, the others are asked again
                    rnd.drop(name, Phase.ROWS, str(error) if isinstance(error, PacketError)
                             else f"{type(error).__name__}: {error}")
            # In their first order: ties in selection go to the first sender, as in the one-step exchange.
            senders = [arrived.get(s.packet.sender, s) for s in senders
                       if s.packet.sender not in missing or s.packet.sender in arrived]
        return senders, up

    def _down(self, own: KnowledgePacket, rnd: RoundContext, live: list[str],
              uploaded: dict[str, KnowledgePacket]) -> dict[str, bytes]:
        """Step (6) per client. Two-step: the server's cross-entropies on every example and its rows only where,
        by that client's cross-entropies from the upload, selection there takes them (the client checks the
        rule against its own and refuses knowledge that withholds a row it selects). Otherwise whole."""
        def wire(packet: KnowledgePacket) -> bytes:
            return packet.to_bytes(self.config.fedmkt.logprob_bits, round_no=rnd.number, phase=Phase.DISTILL.value)

        rule = self.config.fedmkt.selection
        rows = {name: tuple(rows_won_by(own, uploaded[name], rule)) if self.two_step and name in uploaded else None
                for name in live}  # None: the whole packet
        # One packet per distinct set of rows. Compressed one after another: xz is most of the server's own work
        # per client, but an xz compressor holds ~94 MiB (preset 6), so threads would trade memory for it.
        made = {won: wire(own if won is None else own.restricted(won)) for won in dict.fromkeys(rows.values())}
        return {name: made[won] for name, won in rows.items()}

    def train_round(self, rnd: RoundContext) -> None:
        record = rnd.record
        uploaded: dict[str, KnowledgePacket] = {}
        if self.config.fedmkt.llm_training:
            peers, up = self._received(rnd)
            uploaded = {p.packet.sender: p.packet for p in peers}
            stats = None
            while peers and stats is None:  # steps (4)-(5); a sender whose knowledge breaks them is dropped
                if self.two_step:
                    peers, more = self._with_won_rows(rnd, peers)
                    up += more
                    if not peers:
                        break
                try:
                    stats = self.server.absorb(peers)
                except SenderFailure as failure:
                    rnd.drop(failure.sender, Phase.SHARE, str(failure))
                    peers = [p for p in peers if p.packet.sender != failure.sender]
            if stats is not None:
                record.kd_loss["server"], record.selection["server"] = stats.loss, stats.selected
                record.aligned_fraction["server"] = stats.aligned_fraction
            live = [p.packet.sender for p in peers]
        else:  # LLM2SLM: the frozen LLM needs no client knowledge, so clients only fine-tune (step 1)
            up = 0
            live = fine_tune_privately(rnd, rnd.clients)
        down = self._down(self.server.share_knowledge(), rnd, live, uploaded)  # step (6)
        distilled = rnd.call(Phase.DISTILL, {n: Request(rnd.number, packet=packet, tokenizer=self.config.server.source)
                                             for n, packet in down.items()})
        for name, reply in distilled.items():  # step (7) happened on each client
            record.kd_loss[name] = reply.loss
            record.selection[name] = reply.selected
            record.aligned_fraction[name] = reply.aligned
        if self.config.fedmkt.fedavg_slms:
            self.average_client_adapters(rnd, list(distilled))
        record.bytes = WireBytes(up_per_client=up / max(len(uploaded), 1), down=sum(len(p) for p in down.values()))


def _lacks(packet: KnowledgePacket, uids: list[int]) -> bool:
    """Whether the packet lacks the top-K rows of any of `uids`."""
    index = packet.index()
    return any(not packet.carries(index[u]) for u in uids)


class Standalone(Method):
    """Baseline: each SLM trains on its own private data; nothing is exchanged."""

    def train_round(self, rnd: RoundContext) -> None:
        fine_tune_privately(rnd, rnd.clients)


class FedAvg(Standalone):
    """Baseline: SLMs train on private data, then their LoRA adapters are averaged."""

    def train_round(self, rnd: RoundContext) -> None:
        super().train_round(rnd)
        self.average_client_adapters(rnd, list(rnd.record.private_loss))


class Centralized(Method):
    """Baseline: the LLM trains on every client's private data plus the public set, pooled."""

    @property
    def trains_server(self) -> bool:
        return True

    @property
    def trained_clients(self) -> list[str]:
        return []

    def __init__(self, config: RunConfig, server: Party, split: FederatedSplit):
        super().__init__(config, server, split)
        self._pooled: list | None = None  # the pooled examples as the server trains on them, encoded once
        missing = [name for name in self.clients if name not in split.private]
        if missing:
            raise ValueError(f"the centralized baseline pools every client's private data, but the server cannot read "
                             f"that of {missing} (given only on their nodes); run it locally")

    def train_round(self, rnd: RoundContext) -> None:
        if self._pooled is None:
            self._pooled = self.server.encode(
                list(self.split.public) + [q for name in self.clients for q in self.split.private[name]])
        rnd.record.private_loss["server"] = self.server.train_supervised(self._pooled,
                                                                         max(self.config.fedmkt.private_epochs, 1))


# Each name of method_names.METHODS (what it is, its label, what it needs) -> the class that trains it.
CLASSES: dict[str, type[Method]] = {FEDMKT_INFO.name: FedMKT, STANDALONE.name: Standalone, FEDAVG.name: FedAvg,
                                    CENTRALIZED.name: Centralized}


def method_for(config: RunConfig, server: Party, split: FederatedSplit) -> Method:
    return CLASSES[config.fedmkt.method](config, server, split)
