"""Server-side round logic: a fake transport and a model-free server (Prepare / Execute / Assert), then the
same with real tiny parties and faulty clients, and a resume after a crash."""

import json
import re

import numpy as np
import pytest

from fedmkt.config import parse_config
from fedmkt.data.splits import FederatedSplit
from fedmkt.federation.coordinator import Coordinator
from fedmkt.federation.local import LocalFederation
from fedmkt.federation.methods import RoundFailed
from fedmkt.federation.protocol import (ClientFailure, DistillReply, EvaluateReply, Phase, PrivateReply,
                                        ShareReply)
from fedmkt.federation.store import RunStore
from tests.factories import FakeServer, FakeTransport, crash_after_a_share_in_round_two, packet, questions
from tests.tiny import tiny_config


def coordinator(tmp_path, transport, **fedmkt):
    config = parse_config(tiny_config(tmp_path, **{"rounds": 1, **fedmkt}))
    split = FederatedSplit(public=questions(11, 12), private={"stem": ["a"], "hum": ["b", "c"]},
                           evaluation={"stem": questions(1, 2), "humanities": questions(3, domain="humanities")})
    server = FakeServer()
    return Coordinator(config, server, split, transport, RunStore.open(config)), server


def client_packet(name, ce=0.5):
    return packet(name, [1, 2], [ce, ce]).to_bytes()


def evaluation_reply():
    return EvaluateReply(scores={"stem": {"acc": 1.0, "acc_norm": 1.0, "n": 2.0},
                                 "humanities": {"acc": 0.0, "acc_norm": 0.0, "n": 1.0}}).to_wire()


def test_fedmkt_round_absorbs_good_packets_and_drops_malformed_replies(tmp_path):
    # Prepare: "stem" shares a good packet; "hum" replies without a packet.
    sent = client_packet("stem")
    transport = FakeTransport({
        Phase.SHARE: {"stem": ShareReply(compute_s=2.0, packet=sent, private_loss=0.7).to_wire(),
                      "hum": {"private_loss": 0.1, "compute_s": 1.0, "epsilon": float("nan"), "delta": float("nan"),
                              "budget_stop": 0}},
        Phase.DISTILL: {"stem": DistillReply(compute_s=3.0, loss=0.4, selected={"self": 0.0, "server": 1.0},
                                             aligned={"server": 0.8}).to_wire()},
    })
    coord, server = coordinator(tmp_path, transport)
    # Execute
    record = coord.run_round(1)
    # Assert
    assert server.absorbed == [["stem"]]
    assert record.dropped == {"hum": "train.share: malformed reply: no 'packet'"}
    assert record.private_loss == {"stem": 0.7}
    assert record.kd_loss == {"server": 1.5, "stem": 0.4}
    assert record.selection["stem"] == {"self": 0.0, "server": 1.0}
    assert record.aligned_fraction == {"server": {"stem": 0.9}, "stem": {"server": 0.8}}
    assert transport.calls == [(Phase.SHARE, ["hum", "stem"]), (Phase.DISTILL, ["stem"])]  # hum gets nothing down
    assert record.timing.model_compute_s == pytest.approx(5.0)  # the clients' reported compute, counted once
    # The bytes sent (safetensors writes its metadata in hash order, so a re-encoding may compress a few bytes
    # differently).
    assert record.bytes.up_per_client == len(sent)


def test_a_packet_claiming_another_sender_is_rejected(tmp_path):
    transport = FakeTransport({Phase.SHARE: {
        "stem": ShareReply(packet=client_packet("hum"), private_loss=0.7).to_wire(),
        "hum": ShareReply(packet=b"not a packet", private_loss=0.7).to_wire()}})
    coord, server = coordinator(tmp_path, transport)
    with pytest.raises(RoundFailed, match="0 of 2 clients asked replied") as failed:  # fedmkt.min_clients: 1
        coord.run_round(1)
    assert "stem: train.share: packet from client 'stem' claims to come from 'hum'" in str(failed.value)
    assert "hum: train.share: knowledge packet is corrupted or not a packet" in str(failed.value)
    assert server.absorbed == [] and transport.calls[-1][0] == Phase.SHARE  # nothing went down


def test_llm2slm_keeps_the_server_frozen_and_skips_the_upload(tmp_path):
    transport = FakeTransport({
        Phase.PRIVATE: {n: PrivateReply(private_loss=0.7).to_wire() for n in ("stem", "hum")},
        Phase.DISTILL: {n: DistillReply(loss=0.4).to_wire() for n in ("stem", "hum")},
        Phase.EVALUATE: {n: evaluation_reply() for n in ("stem", "hum")}})
    coord, server = coordinator(tmp_path, transport, llm_training=False)
    record = coord.run_round(1)
    assert server.absorbed == [] and "server" not in record.kd_loss
    # Clients fine-tune and distill, but never extract or send knowledge the frozen LLM would ignore.
    assert [phase for phase, _ in transport.calls] == [Phase.PRIVATE, Phase.DISTILL]
    assert record.private_loss == {"stem": 0.7, "hum": 0.7} and record.bytes.up_per_client == 0
    assert set(coord.evaluate(1)) == {"stem", "hum"}
    assert set(coord.evaluate(0)) == {"server", "stem", "hum"}  # zero-shot: everyone


@pytest.mark.parametrize("method, trained", [("standalone", {"stem", "hum"}), ("centralized", {"server"})])
def test_baselines_train_and_evaluate_only_their_parties(tmp_path, method, trained):
    transport = FakeTransport({Phase.PRIVATE: {"stem": PrivateReply(private_loss=0.3).to_wire(),
                                               "hum": ClientFailure("timed out")},
                               Phase.EVALUATE: {n: evaluation_reply() for n in ("stem", "hum")}})
    coord, server = coordinator(tmp_path, transport, method=method)
    record = coord.run_round(1)
    evaluation = coord.evaluate(1)
    if method == "standalone":
        assert record.private_loss == {"stem": 0.3} and record.dropped == {"hum": "train.private: timed out"}
        assert set(evaluation) == {"stem", "hum"} and server.supervised == []
    else:
        assert record.private_loss == {"server": 0.25} and server.supervised == [2 + 1 + 2]  # public + all private
        assert set(evaluation) == {"server"}
        assert all(phase != Phase.PRIVATE for phase, _ in transport.calls)
    assert set(evaluation) == trained
    assert record.bytes.up_per_client == 0 and record.aligned_fraction is None


def test_evaluation_means_and_a_malformed_evaluation_reply(tmp_path):
    transport = FakeTransport({Phase.EVALUATE: {"stem": evaluation_reply(),
                                                "hum": {"eval.stem": 1.0, "compute_s": 0.0}}})
    coord, _ = coordinator(tmp_path, transport)
    evaluation = coord.evaluate(0)
    assert evaluation["stem"].score == pytest.approx(0.5) and evaluation["stem"].mean["acc"] == pytest.approx(0.5)
    assert evaluation["server"].domains["stem"]["n"] == 2
    assert "hum" not in evaluation  # "eval.stem" names no metric: the reply is refused


def test_a_whole_run_writes_metrics_checkpoint_and_no_summary(tmp_path):
    transport = FakeTransport({
        Phase.SHARE: {n: ShareReply(packet=client_packet(n), private_loss=0.7).to_wire() for n in ("stem", "hum")},
        Phase.DISTILL: {n: DistillReply(loss=0.4).to_wire() for n in ("stem", "hum")},
        Phase.EVALUATE: {n: evaluation_reply() for n in ("stem", "hum")}})
    coord, _ = coordinator(tmp_path, transport)
    metrics = coord.run()
    saved = json.loads((coord.store.root / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics.to_json()))
    assert [r["round"] for r in saved["rounds"]] == [1] and set(saved["zero_shot"]) == {"server", "stem", "hum"}
    assert json.loads((coord.store.root / "checkpoint" / "state.json").read_text())["completed_round"] == 1
    assert not (coord.store.root / "summary.md").exists()  # the caller writes it
    assert not list(coord.store.root.rglob("*.pkl"))


def test_evaluate_every_skips_the_rounds_between_and_always_scores_the_last(tmp_path):
    from fedmkt.summary import summary_markdown

    transport = FakeTransport({
        Phase.SHARE: {n: ShareReply(packet=client_packet(n), private_loss=0.7).to_wire() for n in ("stem", "hum")},
        Phase.DISTILL: {n: DistillReply(loss=0.4).to_wire() for n in ("stem", "hum")},
        Phase.EVALUATE: {n: evaluation_reply() for n in ("stem", "hum")}})
    coord, _ = coordinator(tmp_path, transport, rounds=5, evaluate_every=2)
    metrics = coord.run()
    evaluated = [r.round for r in metrics.rounds if r.evaluation]
    assert evaluated == [2, 4, 5]  # every 2nd round, and the last
    assert [phase for phase, _ in transport.calls].count(Phase.EVALUATE) == 1 + 3  # zero-shot + those rounds
    assert [r for r, _ in metrics.stages()] == [0, 2, 4, 5]
    text = summary_markdown(metrics)
    assert "## after round 4" in text and "## after round 3" not in text


def test_zero_shot_scores_are_shared_only_between_the_same_model_questions_and_scoring(tmp_path):
    from types import SimpleNamespace

    def keys(**changes):
        config = tiny_config(tmp_path, rounds=1)
        for section, fields in changes.items():
            config[section] = {**config.get(section, {}), **fields}
        split = FederatedSplit(public=[], private={}, evaluation={"stem": [SimpleNamespace(uid=1), SimpleNamespace(uid=2)]})
        return Coordinator(parse_config(config), FakeServer(), split, FakeTransport({}),
                           RunStore.open(parse_config(config)))._zero_shot_keys()

    base = keys()
    assert base["stem"] == base["hum"] and base["server"] != base["stem"]  # two clients of one model: one score
    assert keys(fedmkt={"method": "standalone", "rounds": 3}) == base  # training settings fix no zero-shot score
    assert keys(data={"choice_format": "cloze"})["server"] != base["server"]
    assert keys(data={"eval_scoring": "text"})["server"] != base["server"]
    assert keys(train={"max_length": 64})["stem"] != base["stem"]


@pytest.mark.parametrize("known, own_eval", [(True, False), (True, True), (False, False)])
def test_zero_shot_is_computed_once_for_clients_of_one_model_where_the_clients_are_known(tmp_path, known, own_eval):
    from types import SimpleNamespace

    config = parse_config(tiny_config(tmp_path, rounds=1))  # stem and hum: the same SmolLM2
    split = FederatedSplit(public=[], private={}, evaluation={"stem": [SimpleNamespace(uid=1)]},
                           client_eval={"hum": [SimpleNamespace(uid=9)]} if own_eval else {})
    reply = EvaluateReply(scores={"stem": {"acc": 1.0, "acc_norm": 1.0, "n": 1}}).to_wire()
    transport = FakeTransport({Phase.EVALUATE: {n: reply for n in ("stem", "hum")}})
    coord = Coordinator(config, FakeServer(), split, transport, RunStore.open(config), clients_known=known)
    zero = coord.zero_shot()
    assert set(zero) == {"server", "stem", "hum"} and zero["hum"] == zero["stem"]
    asked = transport.calls[0][1]
    # Known clients of one model share a score, unless one has a held-out set of its own; on Flower (not known)
    # a node may run another model, so each client answers for itself.
    assert asked == (["hum", "stem"] if own_eval or not known else ["stem"])


def test_round_lines_say_what_they_include_and_estimates_take_training_and_evaluation_apart(tmp_path):
    from tests.test_progress import Recorder

    transport = FakeTransport({
        Phase.SHARE: {n: ShareReply(packet=client_packet(n), private_loss=0.7).to_wire() for n in ("stem", "hum")},
        Phase.DISTILL: {n: DistillReply(loss=0.4).to_wire() for n in ("stem", "hum")},
        Phase.EVALUATE: {n: evaluation_reply() for n in ("stem", "hum")}})
    coord, _ = coordinator(tmp_path, transport, rounds=3, evaluate_every=2)
    coord.reporter = Recorder()
    coord.run()
    took = [line for line in coord.reporter.lines if " took " in line]
    assert re.fullmatch(r"round 1 took \d+s \(training \d+s, no evaluation\); about \d+s left in the run \(2 rounds\)",
                        took[0]), took
    assert re.fullmatch(r"round 2 took \d+s \(training \d+s, evaluation \d+s\).*", took[1]), took
    # The estimate: later rounds' training plus every evaluation still to come, each from the last measured.
    coord.last_train_s, coord.last_eval_s = 10.0, 4.0
    assert coord._time_after(1) == 2 * 10.0 + 2 * 4.0  # rounds 2 and 3 train; 2 and 3 are evaluated, 1 is not
    assert coord._time_after(3) == 4.0  # the last round: only its evaluation is left
    coord.last_train_s = None
    assert coord._time_after(1) is None  # nothing measured yet: no estimate


def test_progress_lines_give_each_kind_of_result_apart(tmp_path):
    from tests.test_progress import Recorder

    free_text = EvaluateReply(scores={"stem": {"acc": 1.0, "acc_norm": 1.0, "n": 2},
                                      "qasc": {"rougeL": 0.25, "exact_match": 0.0, "n": 1}}).to_wire()
    config = parse_config(tiny_config(tmp_path, rounds=1))
    split = FederatedSplit(public=[], private={}, evaluation={"stem": questions(1, 2), "qasc": questions(3, domain="qasc")})
    reporter = Recorder()
    coord = Coordinator(config, FakeServer(), split, FakeTransport({Phase.EVALUATE: {"stem": free_text}}),
                        RunStore.open(config), reporter)
    coord._report("zero-shot", {"stem": coord.evaluate(0)["stem"]})
    assert reporter.lines[-1] == "zero-shot accuracy / ROUGE-L: stem=1.000/0.250"  # never their mean, 0.625


# -- real tiny parties --------------------------------------------------------------------------------

class Faulty:
    """Wraps a transport; corrupts or fails one client's replies in one phase."""

    def __init__(self, inner, client: str, phase: Phase, mode: str):
        self.inner, self.client, self.phase, self.mode = inner, client, phase, mode

    def call(self, phase, payloads):
        replies = self.inner.call(phase, payloads)
        if phase == self.phase and self.client in replies:
            if self.mode == "corrupt":
                packet_bytes = bytearray(replies[self.client]["packet"])
                packet_bytes[-40:] = b"\xff" * 40  # flips the tail: the xz stream's checksum refuses it
                replies[self.client] = dict(replies[self.client], packet=bytes(packet_bytes))
            else:
                replies[self.client] = ClientFailure("timed out")
        return replies


@pytest.mark.parametrize("mode, phase, reason", [("corrupt", Phase.SHARE, "knowledge packet is corrupted"),
                                                 ("fail", Phase.DISTILL, "timed out")])
def test_a_bad_client_is_dropped_and_the_round_goes_on(tmp_path, mmlu, mode, phase, reason):
    federation = LocalFederation(parse_config(tiny_config(tmp_path, "bad", rounds=1)), questions=mmlu)
    coord = federation.coordinator
    coord.transport = Faulty(coord.transport, "hum", phase, mode)
    run_dir = federation.run()
    record = json.loads((run_dir / "metrics.json").read_text())["rounds"][0]
    assert list(record["dropped"]) == ["hum"] and reason in record["dropped"]["hum"]
    assert "stem" in record["kd_loss"]
    if phase == Phase.SHARE:  # the server learned from the good client only
        assert set(record["selection"]["server"]) == {"self", "stem"}
    assert "dropped clients" in (run_dir / "summary.md").read_text()


def test_local_run_resumes_after_a_crash_with_nothing_lost(tmp_path, mmlu):
    whole = LocalFederation(parse_config(tiny_config(tmp_path, "whole")), questions=mmlu).run()
    config = parse_config(tiny_config(tmp_path, "crash"))
    crash_after_a_share_in_round_two(LocalFederation(config, questions=mmlu))  # half a round, then the power goes
    resumed = LocalFederation(config, questions=mmlu, resume=True).run()
    a = json.loads((whole / "metrics.json").read_text())["rounds"]
    b = json.loads((resumed / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in b] == [1, 2]
    for x, y in zip(a, b):
        assert x["kd_loss"] == pytest.approx(y["kd_loss"], rel=1e-5)
        assert x["private_loss"] == pytest.approx(y["private_loss"], rel=1e-5)
        assert x["evaluation"] == y["evaluation"]
    assert np.isfinite(b[1]["kd_loss"]["server"])
    # The step log holds each step once, as the uninterrupted run's does: round 2's crashed steps are gone.
    from fedmkt.tracking import read_steps

    def steps(run):
        return [(r["party"], r["round"], r["what"], r["step"]) for r in read_steps(run / "steps.jsonl")]
    assert steps(resumed) == steps(whole)
