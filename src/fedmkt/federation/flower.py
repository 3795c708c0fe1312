"""FedMKT on Flower's Deployment Engine: a ServerApp and a ClientApp over the Message API.

The ServerApp runs the same Coordinator as `fedmkt run`, with a transport that sends each phase as
Flower messages through the Grid (one message per client, all in flight at once, a timeout per
phase). The ClientApp serves each message with the same ClientRuntime as the local runner; it keeps
its party in memory while its process lives and its adapters in a local store, so a restarted client
process, or a server resuming from its checkpoint, continues from the last completed round. Flower
1.42 starts a process per message (each reloads the model) unless the SuperNode runs with
`--isolation process` and `fedmkt flower-clientapp` (resident.py) serves its messages: then a client
loads its model once per run. Phases map to Flower message types through `Phase` (protocol.py): the
ClientApp registers one handler each. Before them the ServerApp asks every node which client it is
(`query.who`), then tells each accepted node to build its client (`query.welcome`): model, data and
alignments to the server's tokenizer are ready by the first phase, built while the server loads its own.
The run config crosses once per node, with those two; each phase names it by its hash (`config_sha`), so a
phase message does not grow with the number of clients.

Run config (pyproject `[tool.flwr.app.config]` or `flwr run --run-config`):
  config         path of the FedMKT YAML on the server machine (default: the embedded default)
  resume         continue the run folder named by the config after its last checkpoint
  phase-timeout  seconds a client has to answer one phase before it is dropped from the round (a client
                 whose SuperNode stopped heartbeating is dropped as soon as the SuperLink says so)
  join-timeout   seconds to wait for every configured client to connect
Node config (`flower-supernode --node-config`):
  name           which client of the config this node is (required on a SuperNode)
  state-dir      where it keeps its adapters (default: ~/.cache/fedmkt/nodes)
  model          optional local source of its SLM (same tokenizer as the config names)
  private-data   its private data: a file or save_to_disk folder on this machine (the server's config need
                 not name it, and the server never reads it)
  private-columns, private-shape, private-size, private-split, private-subset
                 optional, as in the YAML's set syntax: column mapping (JSON object), shape, how many
                 examples to draw, split and configuration (save_to_disk folders, Hub datasets); or
                 private-data='{source: notes.csv, columns: {prompt: q}, size: 50}' as a whole set
  eval-data      optional: its own held-out evaluation set, reported as this client's "own" score (the
                 same eval-columns, eval-shape, eval-size, eval-split, eval-subset, or a whole set)
  domains        optional comma-separated MMLU domains of its private data (benchmark preset)

On Flower's Simulation Engine (`flwr run flower_app <simulation connection>`) nodes have no config of
their own: simulated node `partition-id` i is client i of the config (its name and private data), and
`num-partitions` must equal the number of clients; their stores go in the run folder's `nodes/`. The same
ServerApp and ClientApp run; a simulation worker keeps every client of the run it has built.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from pydantic import ValidationError

from fedmkt.config import SHA256_PATTERN, RunConfig, SetSpec, load_config, parse_config
from fedmkt.method_names import METHODS
from fedmkt.yaml_text import YamlRefused, load_yaml
from fedmkt.federation.client import ClientRuntime
from fedmkt.federation.coordinator import Coordinator
from fedmkt.federation.protocol import RESIDENT_ENV, ClientFailure, Phase
from fedmkt.federation.setup import federated_split, make_client, make_server, seed_everything
from fedmkt.federation.store import RunStore
from fedmkt.files import atomic_write_text, child
from fedmkt.models import BaseModels, cache_root, peer_tokenizer
from fedmkt.progress import SILENT, LineReporter, Reporter
from fedmkt.tracking import StepLog

RECORD = "fedmkt"
WHO = "query.who"
WELCOME = "query.welcome"  # to each accepted node: build the client now, while the server loads its model
PARTITION, PARTITIONS = "partition-id", "num-partitions"  # what the Simulation Engine gives each node
REPLY_POLL_S = 0.2
JOIN_GRACE_S = 3.0  # once every client is claimed, how long replies still in flight may contest a claim


def _record(message: Message) -> dict:
    return dict(message.content[RECORD]) if RECORD in message.content else {}


def _reply(message: Message, payload: dict) -> Message:
    return Message(RecordDict({RECORD: ConfigRecord(payload)}), reply_to=message)


def _public_key_pem(text: str) -> bytes:
    """An OpenSSH public key (its text, or the path of its .pub file) as PEM SubjectPublicKeyInfo bytes,
    the form in which the SuperLink reports a node's authentication key."""
    from cryptography.hazmat.primitives import serialization

    data = Path(text).expanduser().read_bytes() if not text.lstrip().startswith(("ecdsa-", "ssh-")) else text.encode()
    key = serialization.load_ssh_public_key(data.strip())
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _same_key(a: bytes, b: bytes) -> bool:
    from cryptography.hazmat.primitives import serialization

    try:
        loaded = serialization.load_pem_public_key(b)
    except ValueError:
        return False
    return loaded.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) == a


def resolve_claims(claims: dict[int, str], wanted: set[str], keys: dict[str, bytes],
                   node_keys: dict[int, bytes]) -> tuple[dict[str, int], dict[int, str]]:
    """Which node is which client: ({name: node}, {refused node: why}). A name claimed by two nodes is
    given to neither; a name bound to a key goes only to the node authenticated with that key."""
    by_name: dict[str, list[int]] = {}
    for node, name in claims.items():
        by_name.setdefault(name, []).append(node)
    found, refused = {}, {}
    for name, nodes in by_name.items():
        if name not in wanted:
            for node in nodes:
                refused[node] = f"claims to be '{name}', which is not a client of this run"
            continue
        if name in keys:
            keyed = [n for n in nodes if _same_key(keys[name], node_keys.get(n, b""))]
            for node in set(nodes) - set(keyed):
                refused[node] = f"claims to be '{name}' but is not authenticated with that client's public key"
            nodes = keyed
        if len(nodes) > 1:
            for node in nodes:
                refused[node] = f"{len(nodes)} nodes claim to be '{name}'; none is accepted"
        elif nodes:
            found[name] = nodes[0]
    return found, refused


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
        keys = {c.name: _public_key_pem(c.public_key) for c in self.config.clients if c.public_key}
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
                    claims[reply.metadata.src_node_id] = str(_record(reply).get("name", ""))
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
                out[name] = _record(reply)
        return out


server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    run_config = context.run_config
    config = load_config(run_config.get("config") or None)
    resume = bool(run_config.get("resume", False))
    seed_everything(config.seed)
    # The server reads no client's private data; only a method that pools it does (benchmark presets).
    pools = METHODS[config.fedmkt.method].pools_private
    split = federated_split(config, clients=[c.name for c in config.clients] if pools else [])
    store = RunStore.open(config, resume)
    try:
        reporter = LineReporter()
        transport = FlowerTransport(grid, config, float(run_config.get("phase-timeout", 600)),
                                    float(run_config.get("join-timeout", 120)), reporter)
        server = make_server(config, split)
        server.step_log = StepLog(store.steps, config.tracking.report_to, store.root.name)
        metrics = Coordinator(config, server, split, transport, store, reporter).run(resume=resume)
        store.write_summary(metrics)
    finally:
        store.close()


client_app = ClientApp()
_RUNTIMES: dict[tuple[str, str], ClientRuntime] = {}  # kept while this process lives
_CONFIGS: dict[str, str] = {}  # run configs this process was sent, by hash
_BASES: dict[str, BaseModels] = {}  # per run (config): the base models its clients in this process share
_BUILDING = threading.RLock()  # a phase waits for the build the welcome started


def _node_name(context: Context, config: RunConfig) -> str:
    """Which client this node is: its node config's `name`, or on the Simulation Engine the client whose
    index is the node's partition id."""
    node = context.node_config
    if "name" in node or PARTITION not in node:
        return str(node.get("name", ""))
    names = [c.name for c in config.clients]
    partition, partitions = int(node[PARTITION]), int(node.get(PARTITIONS, len(names)))
    if partitions != len(names) or not 0 <= partition < len(names):
        raise ValueError(f"simulated node {partition} of {partitions}: the run's config has {len(names)} clients "
                         f"({names}); set num-supernodes={len(names)}")
    return names[partition]


def _state_dir(context: Context, config: RunConfig) -> Path:
    node = context.node_config
    if node.get("state-dir"):
        return Path(str(node["state-dir"]))
    if PARTITION in node:  # simulated: every node lives on the server's machine, beside the run
        return config.output_dir / (config.run_name or "default") / "nodes"
    return cache_root() / "nodes"


_SET_OPTIONS = {"columns": "JSON object", "shape": "auto, multiple_choice or instruction", "size": "a count",
                "split": "a split name", "subset": "a Hub configuration name"}


def node_set(node: dict, kind: str) -> SetSpec | None:
    """A node's own data set `kind` ("private" or "eval"), in the YAML's set syntax: `<kind>-data` is a path,
    or a whole set as YAML/JSON (`{source: notes.csv, columns: {prompt: q}, size: 50}`); beside a path,
    `<kind>-columns` (JSON), `<kind>-shape`, `<kind>-size`, `<kind>-split` and `<kind>-subset` say the rest."""
    text = str(node.get(f"{kind}-data") or "").strip()
    if not text:
        return None
    key = f"{kind}-data"
    try:
        if text.startswith("{"):
            spec = load_yaml(text)
        else:
            source = {"source": text}
            for option in _SET_OPTIONS:
                value = node.get(f"{kind}-{option}")
                if value is not None and str(value) != "":
                    key = f"{kind}-{option}"
                    source[option] = json.loads(str(value)) if option == "columns" else value
            spec = source
        return SetSpec.model_validate(spec)
    except (YamlRefused, json.JSONDecodeError, ValidationError) as error:
        raise ValueError(f"node config {key}: {error}".replace("\n", "; ")[:600]) from None


def node_overrides(node: dict, config: RunConfig, name: str) -> dict:
    """What a node's own config changes in client `name`'s spec: its word on its SLM and its data wins over
    the server's config (which need not name its private data at all)."""
    update: dict = {}
    if node.get("model"):
        mine = next(c.model for c in config.clients if c.name == name)  # keeps its lora/train settings
        update["model"] = mine.model_copy(update={"source": str(node["model"])})
    if node.get("domains"):
        update["domains"] = [d.strip() for d in str(node["domains"]).split(",") if d.strip()]
        update["private"] = None
    private, own_eval = node_set(node, "private"), node_set(node, "eval")
    if private is not None:
        update["private"], update["domains"] = private, None
    if own_eval is not None:
        update["eval"] = own_eval
    if node.get("public-set-sha256"):  # the node's own pin: the server's config cannot lift it
        pinned = str(node["public-set-sha256"]).strip().lower()
        if not re.fullmatch(SHA256_PATTERN, pinned):
            raise ValueError(f"node config public-set-sha256={pinned[:80]!r} is not a SHA-256 (64 hex digits)")
        update["public_sha256"] = pinned
    return update


def config_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _config_dir(context: Context) -> Path:
    """Where a node keeps the run configs it was sent (a process per message reads them back here)."""
    node = context.node_config
    return child(Path(str(node["state-dir"])) if node.get("state-dir") else cache_root() / "nodes", "configs")


def _config_text(message: Message, context: Context, keep: bool = False) -> str:
    """The run config a message is for: sent whole with `query.who` and the welcome (kept: `keep`, by an
    accepted node only), named by its hash in every phase."""
    payload = _record(message)
    if "config" in payload:
        text = str(payload["config"])
        sha = config_hash(text)
        if keep and sha not in _CONFIGS:
            _CONFIGS[sha] = text
            atomic_write_text(child(_config_dir(context), f"{sha}.json"), text)
        return text
    sha = str(payload.get("config_sha", ""))
    if sha not in _CONFIGS:
        kept = child(_config_dir(context), f"{sha}.json") if re.fullmatch(SHA256_PATTERN, sha) else None
        text = kept.read_text() if kept is not None and kept.is_file() else None
        if text is None or config_hash(text) != sha:
            raise ValueError(f"this node was never sent run config {sha[:16]} (it comes once, with the server's "
                             f"welcome); restart the run so that the server welcomes this node")
        _CONFIGS[sha] = text
    return _CONFIGS[sha]


def _runtime(message: Message, context: Context) -> ClientRuntime:
    text = _config_text(message, context)
    config = parse_config(json.loads(text))
    name = _node_name(context, config)
    if name not in [c.name for c in config.clients]:
        raise ValueError(f"node config name={name!r} is not a client of this run ({[c.name for c in config.clients]})")
    update = node_overrides(context.node_config, config, name)
    if update:
        config = config.model_copy(update={"clients": [c.model_copy(update=update) if c.name == name else c
                                                       for c in config.clients]})
    key = (name, text)
    with _BUILDING:
        if key not in _RUNTIMES:
            _RUNTIMES[key] = _build(key, config, name, context)
    return _RUNTIMES[key]


def _build(key: tuple[str, str], config: RunConfig, name: str, context: Context) -> ClientRuntime:
    """A client of this node as the config and node config say (called once per run and client)."""
    # Keyed by run name, not Flower's run id: a resumed run is a new Flower run of the same FedMKT run.
    store = child(_state_dir(context, config), config.run_name or "default")
    seed_everything(config.seed)
    for other in [k for k in _RUNTIMES if k[1] != key[1]]:  # another run's clients: free their memory
        del _RUNTIMES[other]
    for other in [k for k in _BASES if k != key[1]]:
        del _BASES[other]
    started = time.perf_counter()
    runtime = make_client(config, name, federated_split(config, clients=[name]), store,
                          bases=_BASES.setdefault(key[1], BaseModels()))
    _note_load(store, time.perf_counter() - started)
    runtime.party.step_log = StepLog(store / "steps.jsonl", config.tracking.report_to, f"{store.name}-{name}")
    return runtime


def _note_load(store: Path, seconds: float) -> None:
    """One line per client built (model loaded) in `loads.jsonl` of the node's run store: how many processes
    built this client in a run, and what each build cost (benchmarks/bench_flower.py counts them)."""
    store.mkdir(parents=True, exist_ok=True)
    with open(store / "loads.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps({"pid": os.getpid(), "seconds": round(seconds, 3), "at": time.time()}) + "\n")


@client_app.query("who")
def who(message: Message, context: Context) -> Message:
    return _reply(message, {"name": _node_name(context, parse_config(json.loads(_config_text(message, context))))})


@client_app.query("welcome")
def welcome(message: Message, context: Context) -> Message:
    _config_text(message, context, keep=True)  # the phases to come name it by its hash
    # Only a process that outlives this message builds ahead (a resident one, or a Simulation Engine worker):
    # Flower's default `flwr-clientapp` exits after replying, which would kill the build half way (the first
    # phase builds then, as without a welcome).
    ahead = os.environ.get(RESIDENT_ENV) == "1" or PARTITION in context.node_config
    if ahead:
        threading.Thread(target=_build_ahead, args=(message, context), daemon=True).start()
    return _reply(message, {"building": ahead})


def _build_ahead(message: Message, context: Context) -> None:
    try:
        with _BUILDING:
            runtime = _runtime(message, context)
            server = parse_config(json.loads(_config_text(message, context))).server.source
            runtime.party.sender_view(peer_tokenizer(server))  # what the first distill needs
    except Exception as error:  # the first phase message builds again and replies with the error; say so here
        LineReporter().message(f"building this node's client ahead failed ({type(error).__name__}: {error}); the "
                               f"first phase builds it again", "warning")


def _serve(phase: Phase, message: Message, context: Context) -> Message:
    return _reply(message, _runtime(message, context).handle(phase, _record(message)))


# One handler per phase; the message type a decorator registers is the phase's value, "<category>.<action>".
@client_app.train("share")
def share(message: Message, context: Context) -> Message:
    return _serve(Phase.SHARE, message, context)


@client_app.query("rows")
def rows(message: Message, context: Context) -> Message:
    return _serve(Phase.ROWS, message, context)


@client_app.train("private")
def private(message: Message, context: Context) -> Message:
    return _serve(Phase.PRIVATE, message, context)


@client_app.train("distill")
def distill(message: Message, context: Context) -> Message:
    return _serve(Phase.DISTILL, message, context)


@client_app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    return _serve(Phase.EVALUATE, message, context)


@client_app.query("adapter")
def get_adapter(message: Message, context: Context) -> Message:
    return _serve(Phase.GET_ADAPTER, message, context)


@client_app.train("adapter")
def set_adapter(message: Message, context: Context) -> Message:
    return _serve(Phase.SET_ADAPTER, message, context)


# Phase -> its handler above (a test checks every phase has one, registered under the phase's message type).
FLOWER_HANDLERS = {Phase.SHARE: share, Phase.ROWS: rows, Phase.PRIVATE: private, Phase.DISTILL: distill,
                   Phase.EVALUATE: evaluate, Phase.GET_ADAPTER: get_adapter, Phase.SET_ADAPTER: set_adapter}
