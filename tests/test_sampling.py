"""Client sampling (fedmkt.clients_per_round, fedmkt.min_clients): the draw, the rounds that ask only the
sampled clients, and a round with too few replies stopping the run with its reason, which a resume repeats."""

import json

import pytest

from fedmkt.config import ConfigError, parse_config
from fedmkt.data.splits import FederatedSplit
from fedmkt.federation.coordinator import Coordinator
from fedmkt.federation.methods import RoundFailed
from fedmkt.federation.protocol import ClientFailure, DistillReply, EvaluateReply, Phase, ShareReply
from fedmkt.federation.store import RunStore
from fedmkt.sampling import sample_size, sampled_clients
from tests.factories import FakeServer, FakeTransport, packet, questions
from tests.tiny import tiny_base, tiny_config

NAMES = [f"c{i}" for i in range(10)]


def test_the_draw_depends_on_seed_and_round_only_and_keeps_config_order():
    draws = [sampled_clients(NAMES, 0.3, seed=7, round_no=r) for r in range(1, 21)]
    assert all(len(d) == 3 and d == sorted(d, key=NAMES.index) for d in draws)
    assert draws == [sampled_clients(NAMES, 0.3, seed=7, round_no=r) for r in range(1, 21)]  # resume-exact
    assert len({tuple(d) for d in draws}) > 5  # rounds differ
    assert sampled_clients(NAMES, 0.3, seed=8, round_no=1) != draws[0] or \
        sampled_clients(NAMES, 0.3, seed=9, round_no=1) != draws[0]
    counts = {n: sum(n in d for d in draws) for n in NAMES}
    assert all(counts.values())  # over 20 rounds, every client is asked at least once
    assert sampled_clients(NAMES, None, seed=7, round_no=3) == NAMES


@pytest.mark.parametrize("per_round, size", [(None, 10), (4, 4), (4.0, 4), (0.25, 3), (0.01, 1), (10, 10)])
def test_a_count_or_a_fraction_rounded_up(per_round, size):
    assert sample_size(10, per_round) == size


@pytest.mark.parametrize("fedmkt, field", [({"clients_per_round": 2.5}, "clients_per_round"),
                                           ({"clients_per_round": 3}, "clients_per_round"),
                                           ({"clients_per_round": 0}, "clients_per_round"),
                                           ({"clients_per_round": 1, "min_clients": 2}, "min_clients")])
def test_sampling_settings_that_cannot_hold_are_refused(fedmkt, field):
    with pytest.raises(ConfigError, match=field):
        parse_config(tiny_base(**fedmkt))


def _coordinator(tmp_path, script, resume=False, **fedmkt):
    config = parse_config(tiny_config(tmp_path, "s", **fedmkt))
    split = FederatedSplit(public=questions(11, 12), private={"stem": ["a"], "hum": ["b"]},
                           evaluation={"stem": questions(1)})
    transport = FakeTransport(script)
    return Coordinator(config, FakeServer(), split, transport, RunStore.open(config, resume)), transport


def _script(failing: str | None = None):
    evaluation = EvaluateReply(scores={"stem": {"acc": 1.0, "n": 1}}).to_wire()
    return {Phase.SHARE: {n: (ClientFailure("gone") if n == failing else
                              ShareReply(packet=packet(n, [1, 2], [0.5, 0.5]).to_bytes(), private_loss=0.7).to_wire())
                          for n in ("stem", "hum")},
            Phase.DISTILL: {n: DistillReply(loss=0.4).to_wire() for n in ("stem", "hum")},
            Phase.EVALUATE: {n: evaluation for n in ("stem", "hum")}}


def test_a_round_asks_only_its_sampled_clients_and_every_client_is_evaluated(tmp_path):
    coordinator, transport = _coordinator(tmp_path, _script(), rounds=4, clients_per_round=1)
    metrics = coordinator.run()
    for record in metrics.rounds:
        expected = sampled_clients(["stem", "hum"], 1, coordinator.config.seed, record.round)
        assert record.sampled == expected and len(expected) == 1
    training = [(phase, names) for phase, names in transport.calls if phase != Phase.EVALUATE]
    assert [names for phase, names in training if phase == Phase.SHARE] == \
        [r.sampled for r in metrics.rounds]
    assert all(names == ["hum", "stem"] for phase, names in transport.calls if phase == Phase.EVALUATE)
    saved = json.loads((coordinator.store.root / "metrics.json").read_text())
    assert [r["sampled"] for r in saved["rounds"]] == [r.sampled for r in metrics.rounds]


def test_too_few_replies_stop_the_run_with_the_reason_and_a_resume_repeats_the_round(tmp_path):
    coordinator, _ = _coordinator(tmp_path, _script(failing="hum"), rounds=2, min_clients=2)
    with pytest.raises(RoundFailed, match="round 1: 1 of 2 clients asked replied to train.share, "
                                          "fedmkt.min_clients is 2"):
        coordinator.run()
    saved = json.loads((coordinator.store.root / "metrics.json").read_text())
    assert saved["rounds"] == [] and "fedmkt.min_clients is 2" in saved["stopped"]
    from fedmkt.records import RunMetrics
    from fedmkt.summary import summary_markdown

    assert "## stopped" in summary_markdown(RunMetrics.from_json(saved))
    coordinator.store.close()
    again, _ = _coordinator(tmp_path, _script(), resume=True, rounds=2, min_clients=2)
    metrics = again.run(resume=True)
    assert [r.round for r in metrics.rounds] == [1, 2] and metrics.stopped is None
