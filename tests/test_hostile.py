"""Every probe of a bad or hostile client, replayed: the run completes, the offender is dropped with its
reason, nothing already saved is lost. Local transport here; real Flower processes in test_flower.py."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from fedmkt.config import ConfigError, parse_config
from fedmkt.federation.flower_identity import resolve_claims
from fedmkt.federation.local import LocalFederation
from fedmkt.federation.protocol import Phase
from fedmkt.knowledge import FORMAT, VERSION, KnowledgePacket, PacketError
from tests.tiny import tiny_config


def raw(meta: dict, arrays: dict) -> bytes:
    return save(arrays, metadata={"format": FORMAT, "version": str(VERSION), "round": "0", "phase": "", **meta})


def rebuild(packet: KnowledgePacket, **changes) -> bytes:
    """A packet's bytes with some arrays or metadata replaced, bypassing every check."""
    arrays = {k: getattr(packet, k) for k in ("example_ids", "ce", "offsets", "topk_ids", "topk_logprobs")}
    if packet.carried is not None:  # the rows of some examples only (two-step exchange)
        arrays["carried"] = packet.carried.astype(np.uint8)
    meta = {"sender": packet.sender, "tokenizer": packet.tokenizer, "vocab_size": str(packet.vocab_size),
            "public_set": packet.public_set, "round": str(packet.round), "phase": packet.phase}
    for key, value in changes.items():
        (arrays if isinstance(value, np.ndarray) else meta)[key] = value
    return raw(meta, {k: np.ascontiguousarray(v) for k, v in arrays.items()})


def header_bytes(header: bytes) -> bytes:
    return len(header).to_bytes(8, "little") + header


def short_positions(p: KnowledgePacket) -> bytes:
    offsets = p.offsets.copy()
    offsets[-1] -= 1
    return rebuild(p, offsets=offsets, topk_ids=p.topk_ids[:-1], topk_logprobs=p.topk_logprobs[:-1])


def zero_ce_garbage(p: KnowledgePacket) -> bytes:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, p.vocab_size, size=p.topk_ids.shape).astype(np.int32)
    return rebuild(p, ce=np.zeros_like(p.ce), topk_ids=ids)


def everything_certain(p: KnowledgePacket) -> bytes:
    """Every position: the label (the sender's own next token, from its best guess) at log-prob 0 beside 15
    junk ids also at 0, so that the CE bound from its own log-probs allows the CE 0 it claims."""
    ids = np.zeros((len(p.topk_ids), 16), dtype=np.int32)
    ids[:, 0] = p.topk_ids[:, 0]
    ids[:, 1:] = (p.topk_ids[:, :1] + np.arange(1, 16)) % p.vocab_size
    return rebuild(p, ce=np.zeros_like(p.ce), topk_ids=ids, topk_logprobs=np.zeros(ids.shape, dtype=np.float16))


PROBES = {
    "header is a JSON list": (lambda p: header_bytes(b"[1, 2]"), "not an object"),
    "header is a number": (lambda p: header_bytes(b"42"), "corrupted or not a packet"),
    "header of 200,000 '['": (lambda p: header_bytes(b"[" * 200_000), "corrupted or not a packet"),
    "ten bytes": (lambda p: b"0123456789", "corrupted or not a packet"),
    "made on another public set": (lambda p: rebuild(p, public_set="0123456789abcdef"), "public set mismatch"),
    "0-d example ids": (lambda p: rebuild(p, example_ids=np.array(5, dtype=np.int64)), "inconsistent shapes"),
    "K = 0": (lambda p: rebuild(p, topk_ids=p.topk_ids[:, :0], topk_logprobs=p.topk_logprobs[:, :0]), "top-K of 0"),
    "K below fedmkt.top_k": (lambda p: rebuild(p, topk_ids=p.topk_ids[:, :4], topk_logprobs=p.topk_logprobs[:, :4]),
                             "top-K is 4"),
    "fewer positions than its tokenization": (short_positions, "positions, its tokenization has"),
    "missing public examples": (lambda p: rebuild(p, example_ids=p.example_ids[:-1], ce=p.ce[:-1],
                                                  offsets=p.offsets[:-1], topk_ids=p.topk_ids[:p.offsets[-2]],
                                                  topk_logprobs=p.topk_logprobs[:p.offsets[-2]]),
                                "not the public set's"),
    "another tokenizer": (lambda p: rebuild(p, tokenizer="0123456789abcdef01234567"), "tokenizer mismatch"),
    "ce = 0 with garbage ids": (zero_ce_garbage, "claims cross-entropy 0.0000"),
    "packet as text": (lambda p: "not bytes", "malformed reply: 'packet' is str"),
    "ids of 2**31 under a claimed vocabulary of 2**32": (
        lambda p: rebuild(p, vocab_size=str(2**32), topk_ids=np.full(p.topk_ids.shape, 2**31, dtype=np.int64)),
        "is not an integer in [1, 2147483647]"),
    "label and 15 junk ids all at log-prob 0, CE 0 claimed": (everything_certain, "sum to 16.000, more than 1"),
    "a packet of the round before": (lambda p: rebuild(p, round=str(p.round - 1)), "it was sent for round 0"),
    "a packet sent for another phase": (lambda p: rebuild(p, phase="train.distill"), "('train.distill'), this is round 1"),
    "a 600 KB sender name with a markdown heading": (lambda p: rebuild(p, sender="x\n# INJECTED heading" * 30000),
                                                     "claims to come from 'x\\n# INJECTED"),
}


class Tamper:
    """Replaces one client's reply (or its packet) in one phase with what an attacker would send."""

    def __init__(self, inner, client: str, phase: Phase, change):
        self.inner, self.client, self.phase, self.change = inner, client, phase, change

    def call(self, phase, payloads):
        replies = self.inner.call(phase, payloads)
        if phase == self.phase and isinstance(replies.get(self.client), dict):
            replies[self.client] = self.change(replies[self.client])
        return replies


def run_with(tmp_path, mmlu, change, phase=Phase.SHARE, client="hum", **fedmkt):
    federation = LocalFederation(parse_config(tiny_config(tmp_path, "probe", rounds=1, **fedmkt)), questions=mmlu)
    coordinator = federation.coordinator
    coordinator.transport = Tamper(coordinator.transport, client, phase, change)
    run_dir = federation.run()
    metrics = json.loads((run_dir / "metrics.json").read_text(), parse_constant=pytest.fail)  # strict JSON
    return run_dir, metrics["rounds"][0]


# Probes of what the rows sent in the two-step exchange's second step hold (the same checks apply to them).
ROW_PROBES = ["K below fedmkt.top_k", "ce = 0 with garbage ids", "ids of 2**31 under a claimed vocabulary of 2**32",
              "label and 15 junk ids all at log-prob 0, CE 0 claimed", "a packet sent for another phase",
              "made on another public set", "a 600 KB sender name with a markdown heading"]


@pytest.mark.parametrize("probe, phase", [(probe, Phase.SHARE) for probe in PROBES]
                         + [(probe, Phase.ROWS) for probe in ROW_PROBES])
def test_a_hostile_packet_drops_its_sender_and_the_round_completes(tmp_path, mmlu, probe, phase):
    """Whole packets (one-step exchange), and the rows a client sends in the two-step exchange's second step."""
    make, reason = PROBES[probe]

    def change(reply):
        return dict(reply, packet=make(KnowledgePacket.from_bytes(reply["packet"])))

    exchange = "one_step" if phase == Phase.SHARE else "two_step"
    run_dir, record = run_with(tmp_path, mmlu, change, phase=phase, exchange=exchange)
    assert list(record["dropped"]) == ["hum"] and reason in record["dropped"]["hum"], record["dropped"]
    assert record["dropped"]["hum"].startswith(phase.value)
    assert set(record["selection"]["server"]) == {"self", "stem"}  # the server learned from the good client only
    assert "stem" in record["kd_loss"] and "hum" not in record["kd_loss"]
    assert (run_dir / "round-1" / "server" / "adapter_model.safetensors").is_file()
    summary = (run_dir / "summary.md").read_text()
    assert "dropped clients" in summary and not any(line.startswith("# INJECTED") for line in summary.splitlines())
    assert all(len(reason) <= 200 for reason in record["dropped"].values())


@pytest.mark.parametrize("phase, change, reason", [
    (Phase.SHARE, lambda r: {k: v for k, v in r.items() if k != "packet"}, "no 'packet'"),
    (Phase.SHARE, lambda r: dict(r, compute_s="fast"), "'compute_s' is str"),
    (Phase.DISTILL, lambda r: {k: v for k, v in r.items() if k != "loss"}, "no 'loss'"),
    (Phase.EVALUATE, lambda r: {"eval.stem": 1.0}, None),
    (Phase.EVALUATE, lambda r: {"compute_s": 1.0, "phase": "evaluate"}, "it scored sets [], the server asked for"),
    (Phase.EVALUATE, lambda r: {k: v for k, v in r.items() if not k.startswith("eval.stem.")},
     "it scored sets ['humanities'], the server asked for ['humanities', 'stem']"),
    (Phase.EVALUATE, lambda r: dict(r, phase="train.distill"), "it answers 'train.distill', not evaluate"),
    (Phase.DISTILL, lambda r: dict(r, loss=-5.0), "'loss' = -5.0 is outside"),
    (Phase.SHARE, lambda r: dict(r, compute_s=float("inf")), "'compute_s' = inf is outside"),
])
def test_malformed_replies_drop_their_sender(tmp_path, mmlu, phase, change, reason):
    run_dir, record = run_with(tmp_path, mmlu, change, phase=phase)
    if reason:
        assert reason in record["dropped"]["hum"]
    else:  # an unusable evaluation: the client is simply not scored
        assert "hum" not in record["evaluation"] and "stem" in record["evaluation"]
    assert "stem" in record["kd_loss"]


def test_a_reply_of_the_wrong_shape_leaves_a_run_that_reports(tmp_path, mmlu):
    from fedmkt.report import write_run_report

    run_dir, record = run_with(tmp_path, mmlu, lambda r: {"compute_s": 1.0, "phase": "evaluate"}, phase=Phase.EVALUATE)
    assert "hum" in record["dropped"] and "hum" not in record["evaluation"]
    assert "| hum | dropped |" in (run_dir / "summary.md").read_text()
    assert write_run_report(run_dir).is_file()


def test_whatever_breaks_while_using_one_senders_knowledge_drops_that_sender(tmp_path, mmlu, monkeypatch):
    import fedmkt.selection

    real = fedmkt.selection.reindex

    def breaks_for_hum(packet, *args):
        if packet.sender == "hum":
            raise IndexError("index -2147483648 is out of bounds")
        return real(packet, *args)

    monkeypatch.setattr(fedmkt.selection, "reindex", breaks_for_hum)
    run_dir, record = run_with(tmp_path, mmlu, lambda r: r)
    assert "IndexError: index -2147483648" in record["dropped"]["hum"]
    assert set(record["selection"]["server"]) == {"self", "stem"}
    assert (run_dir / "checkpoint" / "state.json").is_file()


def test_a_0d_array_in_a_packet_is_named_not_a_type_error():
    p = KnowledgePacket.from_bytes(rebuild_minimal())
    p.example_ids = np.array(1, dtype=np.int64)
    with pytest.raises(PacketError, match="example_ids has 0 dimensions"):
        p.validate()


def test_the_packet_size_is_bounded():
    p = KnowledgePacket.from_bytes(rebuild_minimal())
    assert p.top_k == 2
    with pytest.raises(PacketError, match="exceeds the limit of 100"):
        KnowledgePacket.from_bytes(rebuild_minimal(), max_bytes=100)


def rebuild_minimal() -> bytes:
    return raw({"sender": "x", "tokenizer": "t", "vocab_size": "10"},
               {"example_ids": np.array([1], np.int64), "ce": np.array([1.0], np.float32),
                "offsets": np.array([0, 1], np.int64), "topk_ids": np.array([[1, 2]], np.int32),
                "topk_logprobs": np.array([[-0.5, -1.5]], np.float16)})


@pytest.mark.parametrize("field, value", [
    ("clients.0.name", "../../x"), ("clients.0.name", "/tmp/x"), ("clients.0.name", "a/b"), ("clients.0.name", ""),
    ("clients.0.name", "./stem"), ("clients.0.name", ".hidden"), ("run_name", "../../x"), ("run_name", "/tmp/x"),
    ("train.learning_rate", float("inf")), ("train.learning_rate", float("nan")), ("seed", -1),
])
def test_names_and_numbers_that_would_escape_or_poison_are_refused(tmp_path, field, value):
    config = tiny_config(tmp_path)
    if field.startswith("clients"):
        config["clients"][0]["name"] = value
    elif "." in field:
        section, key = field.split(".")
        config[section][key] = value
    else:
        config[field] = value
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(config)


def test_no_private_training_writes_strict_json(tmp_path, mmlu):
    run_dir, record = run_with(tmp_path, mmlu, lambda r: r, private_epochs=0)
    assert record["private_loss"] == {"stem": None, "hum": None}


def test_output_dir_under_a_file_names_the_field(tmp_path, mmlu):
    (tmp_path / "file").write_text("x")
    config = parse_config({**tiny_config(tmp_path / "file" / "runs"), "run_name": "r"})
    with pytest.raises(ConfigError, match="output_dir"):
        LocalFederation(config, questions=mmlu)


def test_a_model_folder_without_tokenizer_names_the_field(tmp_path, mmlu):
    from fedmkt.models import ModelNotFoundError, load_model
    from fedmkt.config import ModelSpec

    folder = tmp_path / "model"
    load_model(ModelSpec(source="tiny:smollm2-135m-instruct")).model.save_pretrained(folder)  # weights, no tokenizer
    config = tiny_config(tmp_path / "runs")
    config["clients"][1]["model"] = {"source": str(folder)}
    with pytest.raises(ModelNotFoundError, match=r"clients\.1\.model\.source.*no usable tokenizer"):
        LocalFederation(parse_config(config), questions=mmlu)


def test_a_run_killed_during_start_up_can_be_started_again(tmp_path, mmlu):
    config = parse_config(tiny_config(tmp_path, "early", rounds=1))
    LocalFederation(config, questions=mmlu)  # built (initial adapters written), then "killed" before running
    assert (tmp_path / "early" / "round-0").is_dir() and not (tmp_path / "early" / "metrics.json").exists()
    # ... or killed during zero-shot, after a party's answers were saved but before any score was
    (tmp_path / "early" / "answers" / "round-0").mkdir(parents=True)
    (tmp_path / "early" / "answers" / "round-0" / "server.jsonl").write_text('{"answer": "x"}\n')
    LocalFederation(config, questions=mmlu, resume=True).run()  # resume and a fresh start both work
    assert len(json.loads((tmp_path / "early" / "metrics.json").read_text())["rounds"]) == 1


def test_resume_never_unpickles_and_a_damaged_latest_adapter_falls_back(tmp_path, mmlu):
    config = parse_config(tiny_config(tmp_path, "r"))
    first = LocalFederation(config, questions=mmlu)
    original = first.coordinator.run_round

    def stop_after_round_one(round_no):
        if round_no == 2:
            raise KeyboardInterrupt
        return original(round_no)

    first.coordinator.run_round = stop_after_round_one
    with pytest.raises(KeyboardInterrupt):
        first.run()
    run_dir = tmp_path / "r"
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (run_dir / "checkpoint" / "rng.pkl").write_bytes(pickle.dumps(Exploit()))
    (run_dir / "latest" / "hum" / "adapter_model.safetensors").write_bytes(b"half a file")
    LocalFederation(config, questions=mmlu, resume=True).run()
    record = json.loads((run_dir / "metrics.json").read_text())["rounds"][1]
    assert not marker.exists()
    assert record["dropped"] == {} and "hum" in record["kd_loss"]  # picked up from its round-1 snapshot


def test_spoofed_and_duplicate_names_are_refused():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def pem(key):
        return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    stem_key, hum_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    wanted = {"stem", "hum"}
    # Without keys: one name claimed twice is given to neither.
    found, refused = resolve_claims({1: "stem", 2: "stem", 3: "hum"}, wanted, {}, {})
    assert found == {"hum": 3} and set(refused) == {1, 2} and "2 nodes claim to be 'stem'" in refused[1]
    # With keys: the node holding hum's key cannot be stem, the real stem is accepted beside it.
    keys = {"stem": pem(stem_key), "hum": pem(hum_key)}
    found, refused = resolve_claims({1: "stem", 2: "stem", 3: "intruder"}, wanted, keys,
                                    {1: pem(stem_key), 2: pem(hum_key), 3: b""})
    assert found == {"stem": 1} and "not authenticated with that client's public key" in refused[2]
    assert "not a client of this run" in refused[3]


class VirtualClock:
    """`time` as flower_transport.py sees it: a sleep advances the clock at once, so a test counts protocol seconds, not
    the machine's (no verdict depends on its speed)."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name):
        import time
        return getattr(time, name)


class JoinGrid:
    """A Grid of scripted nodes: node 1 died without deregistering (listed, never answers), node 2 is hum,
    node 3 registers two polls late and is stem, node 4 answers late with a second claim of 'hum'. After the
    join, hum answers every phase; stem answers none (`stem_gone`: the SuperLink answers for it, as Flower's
    does once a node's heartbeats stop)."""

    def __init__(self, late_rival: bool = False, stem_gone: bool = False):
        self.polls, self.late_rival, self.stem_gone = 0, late_rival, stem_gone
        self.inbox: dict[str, tuple[int, int, str]] = {}  # message id -> (node, poll it was pushed at, type)

    def get_node_ids(self):
        self.polls += 1
        return [1, 2] + ([3] if self.polls > 2 else []) + ([4] if self.late_rival else [])

    def get_nodes(self):
        return []

    def push_messages(self, messages):
        ids = []
        for m in messages:
            ids.append(f"m{len(self.inbox)}")
            self.inbox[ids[-1]] = (m.metadata.dst_node_id, self.polls, m.metadata.message_type)
        return ids

    def pull_messages(self, ids):
        from types import SimpleNamespace

        from fedmkt.federation.flower_messages import RECORD, WELCOME, WHO
        names = {2: "hum", 3: "stem", 4: "hum"}
        out = []
        for i in ids:
            node, at, kind = self.inbox[i]
            if kind not in (WHO, WELCOME) and node == 3:
                if self.stem_gone:  # the SuperLink's own error reply: its sender is the SuperLink (node 0)
                    out.append(SimpleNamespace(
                        metadata=SimpleNamespace(reply_to_message_id=i, src_node_id=0), has_error=lambda: True,
                        error=SimpleNamespace(reason="Error: Node Unavailable - no heartbeat")))
                continue
            if node in names and (node != 4 or self.polls >= at + 3):  # node 4 takes three polls to answer
                content = {"kd_loss": 1.5} if kind.startswith("train.") else {"name": names[node]}
                out.append(SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=i, src_node_id=node),
                                           has_error=lambda: False, content={RECORD: content}))
        return out


def scripted_transport(monkeypatch, grid: JoinGrid, phase_timeout: float, join_timeout: float):
    from types import SimpleNamespace

    from fedmkt.config import parse_config
    from fedmkt.federation import flower_transport as flower
    from tests.tiny import tiny_config

    clock = VirtualClock()
    monkeypatch.setattr(flower, "time", clock)
    # Flower's Message needs a running ServerApp's identity; the transport only reads where a message goes.
    monkeypatch.setattr(flower, "Message", lambda content, dst_node_id, message_type, **_: SimpleNamespace(
        content=content, metadata=SimpleNamespace(dst_node_id=dst_node_id, message_type=message_type)))
    transport = flower.FlowerTransport(grid, parse_config(tiny_config(Path("runs"))), phase_timeout=phase_timeout,
                                       join_timeout=join_timeout)
    return transport, clock


@pytest.mark.parametrize("late_rival", [False, True])
def test_the_join_waits_for_no_dead_node_and_asks_nodes_that_register_late(late_rival, monkeypatch):
    transport, clock = scripted_transport(monkeypatch, JoinGrid(late_rival), phase_timeout=5,
                                          join_timeout=8 if late_rival else 60)
    # Before, the dead node held every WHO exchange for 30 s; now the join ends once every client is claimed
    # and a short grace has passed for replies in flight, in which a second claim of a name refuses both.
    # Seconds on the protocol's own clock (its polls and waits), the welcome's exchange included.
    assert transport.node_of == ({"stem": 3} if late_rival else {"stem": 3, "hum": 2})
    # With a rival the claims never settle, so the join runs to its timeout (8 s) and the welcome adds nothing.
    from fedmkt.federation.flower_transport import JOIN_GRACE_S
    assert (8 <= clock.now < 8.5) if late_rival else (clock.now < 1 + JOIN_GRACE_S), clock.now


@pytest.mark.parametrize("stem_gone", [False, True])
def test_a_client_that_never_answers_is_dropped_at_the_timeout_and_a_gone_node_at_once(stem_gone, monkeypatch):
    transport, clock = scripted_transport(monkeypatch, JoinGrid(stem_gone=stem_gone), phase_timeout=40,
                                          join_timeout=60)
    before = clock.now
    out = transport.call(Phase.DISTILL, {"stem": {}, "hum": {}})
    assert out["hum"] == {"kd_loss": 1.5}  # the client that answered keeps its reply
    if stem_gone:  # the SuperLink's reply names the node's absence, and it ends the wait before the timeout
        assert "Node Unavailable" in str(out["stem"]) and clock.now - before < 1, (out, clock.now - before)
    else:
        assert str(out["stem"]) == "no reply within 40s" and clock.now - before >= 40


def test_a_client_refuses_knowledge_sent_down_for_another_round_or_from_another_sender(tmp_path, mmlu):
    from fedmkt.federation.protocol import ClientFailure, Request

    federation = LocalFederation(parse_config(tiny_config(tmp_path, "down", rounds=1)), questions=mmlu)
    federation.prepare()
    server, hum = federation.server, federation.runtimes["hum"]
    knowledge = server.share_knowledge()

    def distill(packet: bytes):
        request = Request(2, packet=packet, tokenizer=federation.config.server.source, public_set=server.public_hash)
        return hum.handle(Phase.DISTILL, request.to_wire())

    with pytest.raises(PacketError, match=r"it was sent for round 1 \('train.distill'\), this is round 2"):
        distill(knowledge.to_bytes(round_no=1, phase=Phase.DISTILL.value))
    with pytest.raises(PacketError, match=r"\('train.share'\), this is round 2"):
        distill(knowledge.to_bytes(round_no=2, phase=Phase.SHARE.value))
    with pytest.raises(ClientFailure, match="claims to come from 'stem', not the server"):
        distill(rebuild(KnowledgePacket.from_bytes(knowledge.to_bytes(round_no=2, phase=Phase.DISTILL.value)),
                        sender="stem"))
    assert distill(knowledge.to_bytes(round_no=2, phase=Phase.DISTILL.value))["loss"] >= 0
    federation.store.close()


def test_rows_whose_cross_entropies_changed_since_the_first_step_drop_their_sender_and_the_rest_is_asked_again(
        tmp_path, mmlu):
    asked: list[str] = []

    def change(reply):
        p = KnowledgePacket.from_bytes(reply["packet"])
        return dict(reply, packet=rebuild(p, ce=p.ce + np.float32(0.5)))  # higher: its own log-probs allow it

    federation = LocalFederation(parse_config(tiny_config(tmp_path, "probe", rounds=1)), questions=mmlu)
    coordinator = federation.coordinator
    inner = Tamper(coordinator.transport, "hum", Phase.ROWS, change)

    class Counting:
        def call(self, phase, payloads):
            if phase == Phase.ROWS:
                asked.extend(payloads)
            return inner.call(phase, payloads)

    coordinator.transport = Counting()
    record = json.loads((federation.run() / "metrics.json").read_text())["rounds"][0]
    assert "differ from those it sent in the first step" in record["dropped"]["hum"]
    assert asked.count("stem") == 2 and asked.count("hum") == 1  # stem again, for the examples hum had won
    assert set(record["selection"]["server"]) == {"self", "stem"} and "stem" in record["kd_loss"]
