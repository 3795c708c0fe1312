"""Two rounds of the local federation with tiny random models and the real tokenizers."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from fedmkt.config import parse_config
from fedmkt.federation.local import LocalFederation
from fedmkt.federation.protocol import Phase
from fedmkt.knowledge import KnowledgePacket
from tests.tiny import tiny_config


def tiny_run(tmp_path, **fedmkt):
    return parse_config(tiny_config(tmp_path, **fedmkt))


def initial_adapters(federation):
    return {p.name: p.adapter_state() for p in federation.parties}


def changed(before, run_dir, party, round_no):
    after = load_file(str(run_dir / f"round-{round_no}" / party / "adapter_model.safetensors"))
    assert after.keys() == before.keys()  # the same LoRA tensors, saved
    return any(not torch.equal(before[k], after[k]) for k in before)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory, mmlu):
    tmp = tmp_path_factory.mktemp("fed")
    federation = LocalFederation(tiny_run(tmp), questions=mmlu)
    before = initial_adapters(federation)
    # What crossed the wire: each round's client cross-entropies (SHARE replies) and the server's (DISTILL).
    federation.wire = {}
    transport, call = federation.coordinator.transport, federation.coordinator.transport.call

    def recording(phase, payloads):
        replies = call(phase, payloads)
        sent = replies if phase == Phase.SHARE else payloads if phase == Phase.DISTILL else {}
        for name, wire in sent.items():
            if isinstance(wire, dict) and "packet" in wire:
                packet = KnowledgePacket.from_bytes(wire["packet"])
                federation.wire[(phase, name, int(payloads[name]["round"]))] = dict(zip(packet.example_ids.tolist(),
                                                                                       packet.ce.tolist()))
        return replies

    transport.call = recording
    return federation, before, federation.run()


def test_run_folder_is_complete(default_run):
    _, _, run_dir = default_run
    assert (run_dir / "config.yaml").is_file() and (run_dir / "summary.md").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["rounds"]) == 2 and set(metrics["zero_shot"]) == {"server", "stem", "hum"}
    for r in (1, 2):
        for party in ("server", "stem", "hum"):
            assert (run_dir / f"round-{r}" / party / "adapter_model.safetensors").is_file()
    summary = (run_dir / "summary.md").read_text()
    assert "after round 2" in summary and "| server |" in summary


def test_adapters_change_every_round(default_run):
    federation, before, run_dir = default_run
    for party in ("server", "stem", "hum"):
        assert changed(before[party], run_dir, party, 1)
        r1 = load_file(str(run_dir / "round-1" / party / "adapter_model.safetensors"))
        assert changed(r1, run_dir, party, 2)


def test_knowledge_crosses_both_ways(default_run):
    federation, _, run_dir = default_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for record in metrics["rounds"]:
        server_picks = record["selection"]["server"]
        assert sum(server_picks.values()) == pytest.approx(1) and set(server_picks) == {"self", "stem", "hum"}
        for client in ("stem", "hum"):
            # DualMinCE on the client: the server's knowledge where its cross-entropy beats the client's own,
            # both as they crossed the wire this round.
            own = federation.wire[(Phase.SHARE, client, record["round"])]
            server = federation.wire[(Phase.DISTILL, client, record["round"])]
            expected = sum(server[u] < own[u] for u in own) / len(own)
            assert record["selection"][client]["server"] == pytest.approx(expected)
            assert record["selection"][client]["self"] == pytest.approx(1 - expected)
            assert record["aligned_fraction"][client]["server"] > 0.3
            assert record["aligned_fraction"]["server"][client] > 0.3
        assert record["bytes"]["up_per_client"] > 0 and record["bytes"]["down"] > 0


def test_llm2slm_freezes_the_server_and_fedavg_joins_clients(tmp_path, mmlu):
    federation = LocalFederation(tiny_run(tmp_path, llm_training=False, fedavg_slms=True, rounds=1), questions=mmlu)
    before = initial_adapters(federation)
    run_dir = federation.run()
    assert not changed(before["server"], run_dir, "server", 1)
    assert changed(before["stem"], run_dir, "stem", 1)
    stem = load_file(str(run_dir / "round-1" / "stem" / "adapter_model.safetensors"))
    hum = load_file(str(run_dir / "round-1" / "hum" / "adapter_model.safetensors"))
    assert all(torch.equal(stem[k], hum[k]) for k in stem)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "server" not in metrics["rounds"][0]["selection"]


def test_existing_run_folder_is_not_overwritten(tmp_path, mmlu):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "metrics.json").write_text("{}")
    with pytest.raises(FileExistsError, match="already exists"):
        LocalFederation(tiny_run(tmp_path, rounds=1), questions=mmlu)
    assert (tmp_path / "t" / "metrics.json").read_text() == "{}"


@pytest.mark.parametrize("method", ["standalone", "fedavg", "centralized"])
def test_baselines_train_only_their_parties(tmp_path, mmlu, method):
    federation = LocalFederation(tiny_run(tmp_path, method=method, rounds=1), questions=mmlu)
    before = initial_adapters(federation)
    run_dir = federation.run()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    evaluated = set(metrics["rounds"][0]["evaluation"])
    server_trains = method == "centralized"
    assert changed(before["server"], run_dir, "server", 1) == server_trains
    assert evaluated == ({"server"} if server_trains else {"stem", "hum"})
    if not server_trains:
        stem = load_file(str(run_dir / "round-1" / "stem" / "adapter_model.safetensors"))
        hum = load_file(str(run_dir / "round-1" / "hum" / "adapter_model.safetensors"))
        assert changed(before["stem"], run_dir, "stem", 1) and changed(before["hum"], run_dir, "hum", 1)
        assert all(torch.equal(stem[k], hum[k]) for k in stem) == (method == "fedavg")
    assert metrics["rounds"][0]["bytes"]["up_per_client"] == 0  # no knowledge crosses in a baseline


def test_a_partys_initial_adapter_depends_on_its_seed_only(mmlu):
    """Local and Flower runs build parties in different orders and processes: the LoRA init must not care."""
    from fedmkt.config import FedMKTSpec, LoraSpec, ModelSpec, TrainSpec
    from fedmkt.federation.roles import ClientParty
    from fedmkt.models import load_model

    base = load_model(ModelSpec(source="tiny:smollm2-135m-instruct"), seed=7)

    def build(draws: int):
        loaded = copy.deepcopy(base)  # a real model's load draws nothing from the RNG
        torch.manual_seed(123)
        torch.rand(draws)  # what other parties (or none) took from the global RNG before this one
        return ClientParty("c", loaded, lora=LoraSpec(), train=TrainSpec(max_length=64), fedmkt=FedMKTSpec(),
                           public=mmlu[:2], private=mmlu[2:4], seed=7).adapter_state()

    first, later = build(0), build(1000)
    assert first.keys() == later.keys() and all(torch.equal(first[k], later[k]) for k in first)


def test_a_client_repeating_a_round_logs_its_steps_once_and_leaves_others_steps(tmp_path, mmlu):
    """A Flower node keeps its own steps.jsonl; when the server repeats a round after resuming, the client's
    steps of that round are logged once, and another party's lines in the same file are kept."""
    import json

    from fedmkt.config import parse_config
    from fedmkt.federation.local import LocalFederation
    from fedmkt.federation.protocol import Phase, Request
    from fedmkt.tracking import StepLog
    from tests.tiny import tiny_config

    federation = LocalFederation(parse_config(tiny_config(tmp_path, "repeat", rounds=1)), questions=mmlu)
    hum = federation.runtimes["hum"]
    steps = federation.store.root / "steps.jsonl"
    hum.party.progress.step_log = StepLog(steps)
    steps.write_text(json.dumps({"party": "stem", "round": 1, "what": "private SFT", "step": 1}) + "\n")
    share = Request(1, public_set=federation.server.public_hash).to_wire()
    hum.handle(Phase.SHARE, share)
    def hums():
        return [(s["round"], s["what"], s["step"], s["loss"]) for s in map(json.loads, steps.read_text().splitlines())
                if s["party"] == "hum"]

    once = hums()
    hum.handle(Phase.SHARE, share)  # the server resumed and repeats round 1: the same steps, logged once
    lines = steps.read_text().splitlines()
    assert hums() == once != []
    assert sum('"stem"' in line for line in lines) == 1
    federation.store.close()


def test_lambda_one_is_standalone_training_plus_the_public_labels(tmp_path, mmlu):
    """The grid's lambda-1 ablation: with ce_weight 1.0 the soft targets weigh nothing, so a FedMKT client ends
    exactly where private fine-tuning followed by SFT on the labelled public set (no server at all) ends."""
    from safetensors.torch import load_file

    from fedmkt.config import parse_config
    from fedmkt.federation.local import LocalFederation
    from fedmkt.federation.store import RunStore
    from tests.tiny import tiny_config

    runs = {}
    for weight in (1.0, 0.9):  # 0.9, the default: the soft targets count, and the adapters must differ
        runs[weight] = LocalFederation(parse_config(tiny_config(tmp_path, f"lambda-{weight}", rounds=1,
                                                                ce_weight=weight)), questions=mmlu)
        root = runs[weight].run()
        runs[weight].store.close()
        assert RunStore(root).read_metrics().rounds[0].selection["server"]  # knowledge was exchanged both times
    alone = LocalFederation(parse_config(tiny_config(tmp_path, "by-hand", rounds=1, ce_weight=1.0)), questions=mmlu)
    for name in ("stem", "hum"):
        party = alone.runtimes[name].party
        party.train_private()
        party._train(party.public, party.fedmkt.kd_epochs, "public labels")  # what step (7) trains at lambda 1
        mine = party.adapter_state()
        for weight, same in ((1.0, True), (0.9, False)):
            saved = load_file(str(runs[weight].store.root / "round-1" / name / "adapter_model.safetensors"))
            assert saved.keys() == mine.keys()
            assert all(torch.equal(saved[k], mine[k]) for k in saved) == same, (name, weight)
    alone.store.close()
