"""The ClientApp: serves each Flower message with the same ClientRuntime as the local runner.

It keeps its party in memory while its process lives and its adapters in a local store, so a restarted
client process, or a server resuming from its checkpoint, continues from the last completed round.
Flower 1.42 starts a process per message (each reloads the model) unless the SuperNode runs with
`--isolation process` and `fedmkt flower-clientapp` (resident.py) serves its messages: then a client
loads its model once per run. One handler per phase, registered with Flower's decorators under the
phase's message type (protocol.Phase).

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
  public-set-sha256  the public set this client agreed to: a run whose public set hashes otherwise is refused
  privacy-epsilon    its own DP-SGD budget (docs/privacy.md); the server's config cannot lift it
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from pydantic import ValidationError

from fedmkt.config import SHA256_PATTERN, PrivacySpec, RunConfig, SetSpec, parse_config
from fedmkt.federation.client import ClientRuntime
from fedmkt.federation.flower_messages import (PARTITION, PARTITIONS, RESIDENT, config_hash, record_of,
                                               reply_with)
from fedmkt.federation.protocol import Phase
from fedmkt.federation.setup import federated_split, make_client, seed_everything
from fedmkt.files import atomic_write_text, child
from fedmkt.models import BaseModels, cache_root, peer_tokenizer
from fedmkt.progress import LineReporter
from fedmkt.tracking import StepLog
from fedmkt.yaml_text import YamlRefused, load_yaml

client_app = ClientApp()


class ProcessState:
    """What one ClientApp process keeps between messages (Flower calls module-level handlers, so the app owns
    one of these): the clients it built, the run configs it was sent and the base models its clients share.
    A process per message (Flower's default) starts empty each time and reads what it needs from the store."""

    def __init__(self) -> None:
        self.runtimes: dict[tuple[str, str], ClientRuntime] = {}  # (client, run config text) -> its runtime
        self.configs: dict[str, str] = {}  # run configs by hash
        self.bases: dict[str, BaseModels] = {}  # per run config: the base models of its clients here
        self.building = threading.RLock()  # a phase waits for the build the welcome started

    def forget_other_runs(self, config_text: str) -> None:
        """Free the clients and models of runs other than this one."""
        self.runtimes = {k: v for k, v in self.runtimes.items() if k[1] == config_text}
        self.bases = {k: v for k, v in self.bases.items() if k == config_text}


PROCESS = ProcessState()


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
    if node.get("privacy-epsilon") not in (None, ""):  # the node's own budget: the server's config cannot lift it
        update["privacy"] = node_privacy(node["privacy-epsilon"], config.privacy_for(name))
    return update


def node_privacy(text, configured: PrivacySpec | None) -> PrivacySpec:
    """A node's `privacy-epsilon`: DP-SGD with at most that epsilon, the config's other settings kept (its
    target too, where smaller)."""
    try:
        epsilon = float(text)
    except ValueError:
        epsilon = math.nan
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"node config privacy-epsilon={str(text)[:80]!r} is not a positive number")
    spec = configured or PrivacySpec(target_epsilon=epsilon)
    return spec.model_copy(update={"target_epsilon": min(epsilon, spec.target_epsilon or math.inf)})


def _config_dir(context: Context) -> Path:
    """Where a node keeps the run configs it was sent (a process per message reads them back here)."""
    node = context.node_config
    return child(Path(str(node["state-dir"])) if node.get("state-dir") else cache_root() / "nodes", "configs")


def _config_text(message: Message, context: Context, keep: bool = False) -> str:
    """The run config a message is for: sent whole with `query.who` and the welcome (kept: `keep`, by an
    accepted node only), named by its hash in every phase."""
    payload = record_of(message)
    if "config" in payload:
        text = str(payload["config"])
        sha = config_hash(text)
        if keep and sha not in PROCESS.configs:
            PROCESS.configs[sha] = text
            atomic_write_text(child(_config_dir(context), f"{sha}.json"), text)
        return text
    sha = str(payload.get("config_sha", ""))
    if sha not in PROCESS.configs:
        kept = child(_config_dir(context), f"{sha}.json") if re.fullmatch(SHA256_PATTERN, sha) else None
        text = kept.read_text() if kept is not None and kept.is_file() else None
        if text is None or config_hash(text) != sha:
            raise ValueError(f"this node was never sent run config {sha[:16]} (it comes once, with the server's "
                             f"welcome); restart the run so that the server welcomes this node")
        PROCESS.configs[sha] = text
    return PROCESS.configs[sha]


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
    with PROCESS.building:
        if key not in PROCESS.runtimes:
            PROCESS.runtimes[key] = _build(key, config, name, context)
    return PROCESS.runtimes[key]


def _build(key: tuple[str, str], config: RunConfig, name: str, context: Context) -> ClientRuntime:
    """A client of this node as the config and node config say (called once per run and client)."""
    # Keyed by run name, not Flower's run id: a resumed run is a new Flower run of the same FedMKT run.
    store = child(_state_dir(context, config), config.run_name or "default")
    seed_everything(config.seed)
    PROCESS.forget_other_runs(key[1])
    started = time.perf_counter()
    runtime = make_client(config, name, federated_split(config, clients=[name]), store,
                          bases=PROCESS.bases.setdefault(key[1], BaseModels()))
    _note_load(store, time.perf_counter() - started)
    runtime.party.progress.step_log = StepLog(store / "steps.jsonl", config.tracking.report_to, f"{store.name}-{name}")
    return runtime


def _note_load(store: Path, seconds: float) -> None:
    """One line per client built (model loaded) in `loads.jsonl` of the node's run store: how many processes
    built this client in a run, and what each build cost (benchmarks/bench_flower.py counts them)."""
    store.mkdir(parents=True, exist_ok=True)
    with open(store / "loads.jsonl", "a", encoding="utf-8") as out:
        out.write(json.dumps({"pid": os.getpid(), "seconds": round(seconds, 3), "at": time.time()}) + "\n")


@client_app.query("who")
def who(message: Message, context: Context) -> Message:
    return reply_with(message, {"name": _node_name(context, parse_config(json.loads(_config_text(message, context))))})


@client_app.query("welcome")
def welcome(message: Message, context: Context) -> Message:
    _config_text(message, context, keep=True)  # the phases to come name it by its hash
    # Only a process that outlives this message builds ahead (a resident one, or a Simulation Engine worker):
    # Flower's default `flwr-clientapp` exits after replying, which would kill the build half way (the first
    # phase builds then, as without a welcome).
    ahead = bool(context.node_config.get(RESIDENT)) or PARTITION in context.node_config
    if ahead:
        threading.Thread(target=_build_ahead, args=(message, context), daemon=True).start()
    return reply_with(message, {"building": ahead})


def _build_ahead(message: Message, context: Context) -> None:
    try:
        with PROCESS.building:
            runtime = _runtime(message, context)
            server = parse_config(json.loads(_config_text(message, context))).server.source
            runtime.party.sender_alignment(peer_tokenizer(server))  # what the first distill needs
    except Exception as error:  # the first phase message builds again and replies with the error; say so here
        LineReporter().message(f"building this node's client ahead failed ({type(error).__name__}: {error}); the "
                               f"first phase builds it again", "warning")


def _serve(phase: Phase, message: Message, context: Context) -> Message:
    return reply_with(message, _runtime(message, context).handle(phase, record_of(message)))


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
