"""The client side of each phase, whatever carries the request, and the client's adapter store.

The local runner calls `ClientRuntime.handle` directly; the Flower ClientApp calls it on each
message. Every request names its round. Flower may serve each message in a fresh process, so a client
keeps its latest adapter (and training step) in a store and picks it up; when the server repeats a
round after resuming from its checkpoint, the client starts again from its adapter after the round
before, so nothing is lost and nothing counted twice.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

from safetensors.torch import load_file

from fedmkt.data.questions import Question
from fedmkt.files import atomic_folder, atomic_write_bytes, atomic_write_json, child
from fedmkt.federation.protocol import (OWN, SERVER, AdapterReply, ClientFailure, DistillReply, EvaluateReply, Phase,
                                        PrivateReply, Reply, Request, RowsReply, ShareReply, adapter_from_bytes,
                                        adapter_to_bytes, reply_to_wire, uids_from_wire)
from fedmkt.federation.roles import ClientParty, ReceivedPacket, PrivateTraining
from fedmkt.federation.store import take_answers, write_answers
from fedmkt.knowledge import KnowledgePacket
from fedmkt.models import peer_tokenizer
from fedmkt.records import shown
from fedmkt.tracking import drop_steps_after

INIT = "init"  # the phase recorded for an adapter as initialised
_ENDS_A_ROUND = (Phase.DISTILL.value, Phase.PRIVATE.value, Phase.SET_ADAPTER.value, INIT)


class ClientRuntime:
    """One client: its party, evaluation sets and a store of its adapters.

    store/latest/<name>/    the adapter after the last phase that changed it, with state.json
                            (round, phase, training step): a fresh process picks up from here
    store/round-N/<name>/   the adapter after round N (N=0: as initialised): the run's record, and
                            where a repeated round starts from when the server resumes
    store/shared/<name>.bin the knowledge it computed in its last SHARE (two-step exchange: the rows
                            asked for next come from it, in whichever process serves that message)
    store/privacy/<name>.json  under DP-SGD, the accountant's history: every step ever taken, written
                            before anything trained by it is sent. Unlike the adapter it never rolls
                            back: a round the server repeats after a crash spent its budget the first
                            time too (what it sent then may have been kept)
    """

    def __init__(self, party: ClientParty, evaluation: dict[str, list[Question]], store: Path | None = None,
                 own_evaluation: list[Question] | None = None, pinned_public: str | None = None):
        """pinned_public: the SHA-256 of the public set this client agreed to; it serves no run on another."""
        self.party = party
        self.pinned_public = pinned_public
        self.evaluation = evaluation
        self.own_evaluation = own_evaluation or []  # its own held-out set: scored under OWN, never sent
        self.store = store
        self.state = {"round": 0, "phase": INIT, "step": 0}
        self.shared: KnowledgePacket | None = None  # what its last SHARE computed (the rows come from it)
        if store is not None and not (self._dir("round-0") / "adapter_model.safetensors").is_file():
            self._write(self._dir("round-0"))

    def _dir(self, kind: str) -> Path:
        return child(self.store, kind, self.party.name)

    def _write(self, directory: Path) -> None:
        def write(tmp: Path) -> None:
            self.party.save_adapter(tmp)
            atomic_write_json(tmp / "state.json", self.state)

        atomic_folder(directory, write, replace=True)  # adapter and state change together or not at all

    def _read(self, directory: Path) -> bool:
        if not (directory / "state.json").is_file():
            return False
        adapter = load_file(str(directory / "adapter_model.safetensors"))
        state = json.loads((directory / "state.json").read_text())
        step = int(state["step"])
        self.party.load_adapter_state(adapter)
        self.state, self.party.progress.train_calls = state, step
        return True

    def _last_good(self, before_round: int) -> None:
        """`latest` is unreadable: fall back to the newest readable round snapshot before this round."""
        for round_no in range(before_round, -1, -1):
            try:
                if self._read(self._dir(f"round-{round_no}")):
                    return
            except Exception:  # that snapshot is damaged too: try an older one
                continue
        raise ClientFailure(f"client '{self.party.name}': no readable adapter in its store {self.store}")

    def _ledger(self) -> Path:
        return child(self.store, "privacy", f"{self.party.name}.json")

    def _train_private(self) -> PrivateTraining:
        """Step (1); under DP-SGD its steps are on record in the store before the caller may send anything."""
        trained = self.party.train_private()
        if self.party.privacy is not None and self.store is not None:
            atomic_write_json(self._ledger(), {"history": self.party.privacy.state()})
        return trained

    def _sync(self, round_no: int, phase: Phase) -> None:
        """Bring the in-memory adapter (and privacy ledger) to where this request expects it."""
        if self.store is None:
            return
        if phase in (Phase.SHARE, Phase.PRIVATE) and self.party.privacy is not None and self._ledger().is_file():
            # the phases that train privately and report the spend; another process may have trained since
            try:
                self.party.privacy.load_state(json.loads(self._ledger().read_text())["history"])
            except (ValueError, KeyError, TypeError) as error:  # never guess a smaller spend
                raise ClientFailure(f"client '{self.party.name}': its privacy ledger {self._ledger()} is unreadable "
                                    f"({type(error).__name__}); it trains no more on private rows until it is "
                                    f"mended") from None
        latest = self._dir("latest")
        if latest.exists():
            try:
                if json.loads((latest / "state.json").read_text()) != self.state:
                    self._read(latest)
            except Exception:  # half-written or damaged by hand: the last good round is still there
                self._last_good(max(round_no - 1, 0))
        if phase in (Phase.SHARE, Phase.PRIVATE):  # a round's first phase
            done = self.state["round"] == round_no - 1 and self.state["phase"] in _ENDS_A_ROUND
            if not done:  # the server is repeating a round (it resumed): start from the round before
                self._last_good(round_no - 1)
                # and forget its steps logged for the repeated rounds (a Flower node's own steps.jsonl)
                drop_steps_after(child(self.store, "steps.jsonl"), round_no - 1, party=self.party.name)

    def _persist(self, round_no: int, phase: Phase, snapshot: bool) -> None:
        self.state = {"round": round_no, "phase": phase.value, "step": self.party.progress.train_calls}
        if self.store is not None:
            self._write(self._dir("latest"))
            if snapshot:
                self._write(self._dir(f"round-{round_no}"))

    def handle(self, phase: Phase | str, payload: dict) -> dict:
        """Serve one request in its wire form; the reply, in wire form, says how long the model computed."""
        try:
            phase = Phase(phase)
        except ValueError:
            raise ClientFailure(f"unknown phase '{phase}'; known: {[p.value for p in Phase]}") from None
        before = self.party.clock.seconds
        reply = self.serve(phase, Request.from_wire(payload))
        reply.compute_s = self.party.clock.seconds - before
        return reply_to_wire(phase, reply)

    def serve(self, phase: Phase, request: Request) -> Reply:
        party = self.party
        party.progress.round = request.round
        if self.pinned_public is not None and party.public_sha256 != self.pinned_public:
            # A "public" set chosen by the server could hold texts it suspects are private: this client's
            # cross-entropies on them would tell which are (a membership oracle).
            raise ClientFailure(f"client '{party.name}' pins public set sha256 {self.pinned_public[:16]}..., this "
                                f"run's is {party.public_sha256[:16]}... (logged whole at the run's start): refused")
        if request.public_set is not None and request.public_set != party.public_hash:
            raise ClientFailure(f"public set mismatch: the server holds public set {request.public_set}, client "
                                f"'{party.name}' holds {party.public_hash}; every party must load the same data.public")
        self._sync(request.round, phase)
        return HANDLERS[phase](self, request)

    # One handler per phase (HANDLERS): each brings the party through its step and says what to reply.
    def _share(self, request: Request) -> ShareReply:  # steps (1) and (2)
        party = self.party
        trained = self._train_private()
        self._persist(request.round, Phase.SHARE, snapshot=False)
        knowledge = party.share_knowledge()
        if party.fedmkt.two_step:  # the cross-entropies now, the rows the server selects next
            self._keep_shared(knowledge, request.round)
            knowledge = knowledge.restricted([])
        packet = knowledge.to_bytes(party.fedmkt.logprob_bits, round_no=request.round, phase=Phase.SHARE.value)
        return ShareReply(packet=packet, **self._private_report(trained))

    def _private_report(self, trained: PrivateTraining) -> dict:
        """Step (1)'s reply fields: the loss, or under DP-SGD the budget spent instead (a loss on the private
        rows is not private)."""
        budget = self.party.privacy
        if budget is None:
            return {"private_loss": float(trained.loss)}
        return {"epsilon": budget.epsilon(), "delta": budget.delta, "budget_stop": trained.budget_stop}

    def _keep_shared(self, knowledge: KnowledgePacket, round_no: int) -> None:
        self.shared = replace(knowledge, round=round_no)  # (the arrays are not copied)
        if self.store is not None:  # float16 as computed, so the rows sent later encode exactly as one-step's;
            # uncompressed: only this client reads it back
            atomic_write_bytes(child(self.store, "shared", f"{self.party.name}.bin"),
                               knowledge.to_bytes(16, compress=False, round_no=round_no, phase=Phase.SHARE.value))

    def _shared_in(self, round_no: int) -> KnowledgePacket | None:
        """What this client shared in round `round_no`: in memory, or from its store (a process that did not
        serve that SHARE); None if it shared nothing then."""
        if self.shared is None and self.store is not None:
            path = child(self.store, "shared", f"{self.party.name}.bin")
            if path.is_file():  # read once per process
                self.shared = KnowledgePacket.from_bytes(path.read_bytes(),
                                                         max_decoded=self.party.fedmkt.max_decoded_bytes)
        return self.shared if self.shared is not None and self.shared.round == round_no else None

    def _rows(self, request: Request) -> RowsReply:  # two-step exchange, step 2
        party = self.party
        shared = self._shared_in(request.round)
        if shared is None:
            raise ClientFailure(f"client '{party.name}' is asked for its rows of round {request.round}, but shared "
                                f"no knowledge in that round")
        asked = uids_from_wire(request.uids)
        unknown = set(asked) - set(party.public_by_uid)
        if unknown:
            raise ClientFailure(f"asked for rows of {len(unknown)} examples not in the public set")
        packet = shared.restricted(asked).to_bytes(party.fedmkt.logprob_bits, round_no=request.round,
                                                   phase=Phase.ROWS.value)
        return RowsReply(packet=packet)

    def _private(self, request: Request) -> PrivateReply:
        trained = self._train_private()
        self._persist(request.round, Phase.PRIVATE, snapshot=True)
        return PrivateReply(**self._private_report(trained))

    def _distill(self, request: Request) -> DistillReply:  # step (7)
        party = self.party
        packet = KnowledgePacket.from_bytes(request.packet, max_bytes=party.fedmkt.max_packet_bytes,
                                            max_decoded=party.fedmkt.max_decoded_bytes)
        if packet.sender != SERVER:
            raise ClientFailure(f"the knowledge sent down claims to come from {shown(packet.sender)}, not the server")
        knowledge = party.receive(ReceivedPacket(packet, peer_tokenizer(str(request.tokenizer))), request.round,
                                  Phase.DISTILL.value)
        if self.state["round"] == request.round and self.state["phase"] == Phase.SHARE.value:
            # The adapter is as it was when this round's knowledge was shared: a process that did not serve the
            # SHARE takes that knowledge (float16 as computed) instead of computing it again, so its own
            # cross-entropies are exactly those the server chose the rows sent down by.
            shared = self._shared_in(request.round)
            if shared is not None:
                party.adopt_knowledge(shared)
        stats = party.absorb([knowledge])
        self._persist(request.round, Phase.DISTILL, snapshot=True)
        return DistillReply(loss=stats.loss, selected=stats.selected, aligned=stats.aligned_fraction)

    def _evaluate(self, request: Request) -> EvaluateReply:
        party = self.party
        scores = {domain: party.evaluate(questions) for domain, questions in self.evaluation.items()}
        if self.own_evaluation:
            scores[OWN] = party.evaluate(self.own_evaluation)
            # Answers to its own held-out prompts stay with the client, in its store; the scores go up.
            rows = take_answers({OWN: scores[OWN]}, {OWN: self.own_evaluation})
            if self.store is not None:
                write_answers(self.store, request.round, f"{party.name}.{OWN}", rows)
        return EvaluateReply(scores=scores)

    def _get_adapter(self, request: Request) -> AdapterReply:
        return AdapterReply(adapter=adapter_to_bytes(self.party.adapter_state()))

    def _set_adapter(self, request: Request) -> Reply:
        self.party.load_adapter_state(adapter_from_bytes(request.adapter))
        self._persist(request.round, Phase.SET_ADAPTER, snapshot=True)
        return Reply()


# Phase -> the ClientRuntime method serving it; its reply type is protocol.REPLIES[phase]. A new phase is a
# Phase member, its reply class in REPLIES and a handler here (a test checks the three tables agree).
HANDLERS: dict[Phase, Callable[[ClientRuntime, Request], Reply]] = {
    Phase.SHARE: ClientRuntime._share, Phase.ROWS: ClientRuntime._rows, Phase.PRIVATE: ClientRuntime._private,
    Phase.DISTILL: ClientRuntime._distill, Phase.EVALUATE: ClientRuntime._evaluate, Phase.GET_ADAPTER: ClientRuntime._get_adapter,
    Phase.SET_ADAPTER: ClientRuntime._set_adapter}
