"""The two-step exchange: cross-entropies first, then only the rows selection takes, both ways. Every trained
number must equal the one-step exchange's on the same seed; what arrives is checked as in one step."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file

from fedmkt.config import parse_config
from fedmkt.federation.local import LocalFederation
from fedmkt.federation.protocol import ClientFailure, Phase, Request, uids_to_wire
from fedmkt.knowledge import KnowledgePacket, PacketError
from fedmkt.selection import AlignedKnowledge, build_targets, rows_won_by, select_sources
from tests.factories import packet, ragged_packet
from tests.tiny import tiny_config

PARTIES = ("server", "stem", "hum")


def run(tmp_path, mmlu, exchange, **fedmkt):
    config = parse_config(tiny_config(tmp_path, run_name=exchange, exchange=exchange, **fedmkt))
    run_dir = LocalFederation(config, questions=mmlu).run()
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


def trained_numbers(metrics: dict) -> list:
    keep = ("private_loss", "kd_loss", "selection", "aligned_fraction", "evaluation", "dropped")
    return [{k: r[k] for k in keep} for r in metrics["rounds"]]


@pytest.mark.parametrize("selection", ["dual_min_ce", "weighted"])
def test_two_step_trains_exactly_what_one_step_trains_on_fewer_bytes(tmp_path, mmlu, selection):
    one_dir, one = run(tmp_path, mmlu, "one_step", selection=selection)
    two_dir, two = run(tmp_path, mmlu, "two_step", selection=selection)
    assert trained_numbers(two) == trained_numbers(one)
    for round_no in (1, 2):
        for party in PARTIES:
            a = load_file(str(one_dir / f"round-{round_no}" / party / "adapter_model.safetensors"))
            b = load_file(str(two_dir / f"round-{round_no}" / party / "adapter_model.safetensors"))
            assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    for r1, r2 in zip(one["rounds"], two["rounds"]):
        if selection == "dual_min_ce":  # each example's rows come from one source at most
            assert r2["bytes"]["up_per_client"] < r1["bytes"]["up_per_client"]
            assert r2["bytes"]["down"] < r1["bytes"]["down"]
        else:  # every source weighs in on every example, so nothing is left out: one step (a packet's size
            # varies by up to ~1% with the order safetensors writes its metadata in; a first step of
            # cross-entropies would add ~25%)
            assert r2["bytes"]["up_per_client"] == pytest.approx(r1["bytes"]["up_per_client"], rel=0.03)


def test_a_packet_carrying_some_rows_round_trips_and_is_checked_where_it_carries():
    full = ragged_packet(n=4)
    part = full.restricted([11, 13])
    assert [part.carries(n) for n in range(4)] == [False, True, False, True]
    back = KnowledgePacket.from_bytes(part.to_bytes(16))
    assert np.array_equal(back.carried, part.carried) and np.array_equal(back.ce, full.ce)
    for n in (1, 3):
        assert np.array_equal(back.topk_ids[back.rows(n)], full.topk_ids[full.rows(n)])
        assert np.array_equal(back.topk_logprobs[back.rows(n)], full.topk_logprobs[full.rows(n)])
    assert KnowledgePacket.from_bytes(full.restricted(range(10, 14)).to_bytes()).carried is None  # all of them
    forged = full.restricted([11])
    forged.carried = np.array([True, False, False, False])  # the rows it holds are example 11's, not 10's
    with pytest.raises(PacketError, match="not carried has top-K rows"):
        forged.validate()


def test_eight_bit_rows_sent_alone_decode_exactly_as_in_the_whole_packet():
    full = ragged_packet(n=5, seed=4)
    whole = KnowledgePacket.from_bytes(full.to_bytes(8))
    part = KnowledgePacket.from_bytes(full.restricted([12, 14]).to_bytes(8))
    for n in (2, 4):
        assert np.array_equal(part.topk_logprobs[part.rows(n)], whole.topk_logprobs[whole.rows(n)])


def test_a_receiver_refuses_knowledge_that_withholds_a_row_selection_takes():
    own = packet("self", [1, 2], [2.0, 2.0])
    sender = packet("server", [1, 2], [1.0, 3.0])  # it wins example 1 only
    assert rows_won_by(sender, own, "dual_min_ce") == [1]
    labels = {1: np.zeros(2, np.int64), 2: np.zeros(2, np.int64)}
    weights = select_sources(own.ce.astype(np.float64), sender.ce[None].astype(np.float64), "dual_min_ce")
    fair = AlignedKnowledge(sender.restricted([1]), _identity(50), {1: np.arange(2), 2: np.arange(2)})
    assert set(build_targets([1, 2], weights, own, [fair], labels)) == {1, 2}
    withheld = AlignedKnowledge(sender.restricted([]), _identity(50), fair.alignments)
    with pytest.raises(Exception, match="holds no top-K for it"):
        build_targets([1, 2], weights, own, [withheld], labels)


def _identity(vocab):
    from fedmkt.alignment.vocab import VocabMap

    return VocabMap(target_ids=np.arange(vocab, dtype=np.int32), distances=np.zeros(vocab), sender="s", receiver="r")


@pytest.fixture(scope="module")
def two_step_federation(tmp_path_factory, mmlu):
    config = parse_config(tiny_config(tmp_path_factory.mktemp("rows"), rounds=1))
    federation = LocalFederation(config, questions=mmlu)
    federation.prepare()
    return federation


def test_a_client_serves_its_rows_from_its_store_in_a_fresh_process(two_step_federation):
    runtime = two_step_federation.runtimes["stem"]
    payload = Request(1, public_set=runtime.party.public_hash).to_wire()
    runtime.handle(Phase.SHARE, payload)
    in_memory = runtime.shared
    runtime.shared = None  # as a process that did not serve the SHARE
    uids = runtime.party.public_uids[:2]
    reply = runtime.handle(Phase.ROWS, {**payload, "uids": uids_to_wire(uids)})
    rows = KnowledgePacket.from_bytes(reply["packet"])
    assert rows.phase == Phase.ROWS.value and np.array_equal(rows.ce, in_memory.ce)
    assert {int(rows.example_ids[n]) for n in range(len(rows.ce)) if rows.carries(n)} == set(uids)
    with pytest.raises(ClientFailure, match="shared no knowledge in that round"):
        runtime.handle(Phase.ROWS, {**Request(2, public_set=runtime.party.public_hash).to_wire(),
                                    "uids": uids_to_wire(uids)})
    with pytest.raises(ClientFailure, match="not in the public set"):
        runtime.handle(Phase.ROWS, {**payload, "uids": uids_to_wire([10**9])})


def test_a_fresh_process_distills_from_the_knowledge_it_shared_without_computing_it_again(two_step_federation,
                                                                                           monkeypatch):
    from fedmkt.federation import roles

    federation = two_step_federation
    runtime = federation.runtimes["hum"]
    public = runtime.party.public_hash
    runtime.handle(Phase.SHARE, Request(1, public_set=public).to_wire())
    shared_ce = runtime.shared.ce.copy()
    runtime.shared, runtime.party._knowledge = None, None  # as a process that did not serve the SHARE
    down = federation.server.share_knowledge().to_bytes(round_no=1, phase=Phase.DISTILL.value)
    computed, own_ce = [], []
    monkeypatch.setattr(roles, "extract_knowledge", lambda *a, **k: computed.append(1))
    absorb = runtime.party.absorb
    monkeypatch.setattr(runtime.party, "absorb", lambda senders: own_ce.append(runtime.party._knowledge.ce) or
                        absorb(senders))
    runtime.handle(Phase.DISTILL, Request(1, packet=down, tokenizer=federation.config.server.source,
                                          public_set=public).to_wire())
    assert not computed and np.array_equal(own_ce[0], shared_ce)
