"""The ServerApp's transport: each phase as Flower messages through the Grid, one per client, all in flight
at once, a timeout per phase; and the join before round 1 (who is which client, then a welcome to build).

The run config crosses once per node, with `query.who` and the welcome; each phase names it by its hash
(`config_sha`), so a phase message does not grow with the number of clients.
"""

from __future__ import annotations

import time

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedmkt.config import RunConfig
from fedmkt.federation.flower_identity import public_key_pem, resolve_claims
from fedmkt.federation.flower_messages import RECORD, WELCOME, WHO, config_hash, record_of
from fedmkt.federation.protocol import ClientFailure, Phase
from fedmkt.progress import SILENT, Reporter

REPLY_POLL_S = 0.2
JOIN_GRACE_S = 3.0  # once every client is claimed, how long replies still in flight may contest a claim


class FlowerTransport:
    """Phases as Flower messages; no reply within the timeout, or an error reply, drops the client."""

    def __init__(self, grid: Grid, config: RunConfig, phase_timeout: float, join_timeout: float,
                 reporter: Reporter = SILENT):
        self.grid, self.config, self.reporter = grid, config, reporter
        # The config goes to each node once, with `query.who` and the welcome; phases name it by its hash.
        self.config_json = config.model_dump_json()
        self.config_sha = config_hash(self.config_json)
        self.phase_timeout = phase_timeout
        self.node_of = self._join(join_timeout)
        self._welcome()

    def _join(self, timeout: float) -> dict[str, int]:
        """Ask every node which client it is; accept a claim only when it is unique and, where the config
        names a public key for that client, made by a node whose SuperNode authentication key it is."""
        wanted = {c.name for c in self.config.clients}
        keys = {c.name: public_key_pem(c.public_key) for c in self.config.clients if c.public_key}
        if not keys:
            self.reporter.message("SuperNode identities are unverified: a node is whichever client it names; set "
                                  "clients.N.public_key with SuperNode authentication to bind names to keys",
                                  "warning")
        claims: dict[int, str] = {}
        refused: dict[int, str] = {}
        found: dict[str, int] = {}
        asked: dict[str, int] = {}  # WHO message id -> node, for the replies not in yet
        reported: set[int] = set()
        payload = ConfigRecord({"config": self.config_json})
        deadline = time.monotonic() + timeout
        complete_at: float | None = None
        # One poll loop over every WHO in flight: a node that died without deregistering stays listed until
        # its heartbeats run out and never answers; it must not hold up the nodes that do, nor keep a node
        # that registers later from being asked.
        while time.monotonic() < deadline:
            new = [n for n in self.grid.get_node_ids() if n not in claims and n not in asked.values()]
            if new:
                ids = self.grid.push_messages([Message(RecordDict({RECORD: payload}), dst_node_id=n,
                                                       message_type=WHO) for n in new])
                asked.update(zip(ids, new))
            replies = list(self.grid.pull_messages(list(asked))) if asked else []
            for reply in replies:
                asked.pop(reply.metadata.reply_to_message_id, None)
                if not reply.has_error():
                    claims[reply.metadata.src_node_id] = str(record_of(reply).get("name", ""))
            if replies:
                node_keys = {info.node_id: bytes(info.public_key) for info in self.grid.get_nodes()} if keys else {}
                found, refused = resolve_claims(claims, wanted, keys, node_keys)
                for node in set(refused) - reported:
                    self.reporter.message(f"node {node} refused: {refused[node]}", "warning")
                reported |= set(refused)
            if set(found) == wanted:
                complete_at = complete_at or time.monotonic()
                # A short grace for nodes still answering: a second claim of a name refuses both claimants.
                if not asked or time.monotonic() - complete_at >= JOIN_GRACE_S:
                    break
            else:
                complete_at = None
            time.sleep(REPLY_POLL_S)
        if not found:
            raise RuntimeError(f"no client joined within {timeout:.0f}s (expected {sorted(wanted)})"
                               + (f"; refused: {refused}" if refused else ""))
        return found

    def _welcome(self) -> None:
        """Tell each accepted node to build its client (model, data, the server's tokenizer and the alignments
        to it) now: the build overlaps the server's own model load and vocabulary maps instead of following
        them. Refused nodes get nothing and build nothing."""
        config = ConfigRecord({"config": self.config_json})
        self.exchange([Message(RecordDict({RECORD: config}), dst_node_id=node, message_type=WELCOME)
                       for node in self.node_of.values()], timeout=30)

    def exchange(self, messages: list[Message], timeout: float) -> dict[str, Message]:
        """Push messages and collect their replies until all came or the timeout passed: {message id: reply}.
        The Grid's own send_and_receive, polling every REPLY_POLL_S instead of its fixed 3 s (up to 3 s more
        per phase). A reply is matched by the message it answers, not by its sender: the SuperLink answers
        for a node whose heartbeats stopped (an error reply of its own), and that drops the client at once
        instead of at the timeout."""
        return self._collect(set(self.grid.push_messages(messages)) - {None}, timeout)

    def _collect(self, waiting: set[str], timeout: float) -> dict[str, Message]:
        replies: dict[str, Message] = {}
        deadline = time.monotonic() + timeout
        while waiting:
            for reply in self.grid.pull_messages(waiting):
                waiting.discard(reply.metadata.reply_to_message_id)
                replies[reply.metadata.reply_to_message_id] = reply
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(REPLY_POLL_S)
        return replies

    def call(self, phase: Phase, payloads: dict[str, dict]) -> dict:
        out: dict = {name: ClientFailure("not connected") for name in payloads if name not in self.node_of}
        names, messages = [], []
        for name, payload in payloads.items():
            if name in self.node_of:
                names.append(name)
                payload = dict(payload, config_sha=self.config_sha)
                messages.append(Message(RecordDict({RECORD: ConfigRecord(payload)}), dst_node_id=self.node_of[name],
                                        message_type=phase.value, ttl=self.phase_timeout + 60))
        if not messages:
            return out
        # push_messages returns the ids in the order of the messages, None for one the SuperLink refused.
        sent = dict(zip(self.grid.push_messages(messages), names))
        replies = self._collect(set(sent) - {None}, self.phase_timeout)
        for message_id, name in sent.items():
            reply = replies.get(message_id)
            if message_id is None:
                out[name] = ClientFailure("the SuperLink refused the message")
            elif reply is None:
                out[name] = ClientFailure(f"no reply within {self.phase_timeout:.0f}s")
            elif reply.has_error():
                out[name] = ClientFailure(reply.error.reason)
            else:
                out[name] = record_of(reply)
        return out
