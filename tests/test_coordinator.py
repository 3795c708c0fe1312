"""Server-side round logic with faulty clients (in process)."""

import json

import pytest

from fedmkt.config import parse_config
from fedmkt.federation import protocol
from fedmkt.federation.local import LocalFederation
from tests.flower_cluster import tiny_config


class Faulty:
    """Wraps a transport; corrupts or fails one client's replies in one phase."""

    def __init__(self, inner, client: str, phase: str, mode: str):
        self.inner, self.client, self.phase, self.mode = inner, client, phase, mode

    def call(self, phase, payloads):
        replies = self.inner.call(phase, payloads)
        if phase == self.phase and self.client in replies:
            if self.mode == "corrupt":
                packet = bytearray(replies[self.client]["packet"])
                packet[-40:] = b"\xff" * 40  # flips the tail: ids out of range or NaN logits
                replies[self.client] = dict(replies[self.client], packet=bytes(packet))
            else:
                replies[self.client] = protocol.ClientFailure("timed out")
        return replies


@pytest.mark.parametrize("mode, phase, reason", [("corrupt", protocol.SHARE, "knowledge packet from 'hum'"),
                                                 ("fail", protocol.DISTILL, "timed out")])
def test_a_bad_client_is_dropped_and_the_round_goes_on(tmp_path, mmlu, mode, phase, reason):
    federation = LocalFederation(parse_config(tiny_config(tmp_path, "bad", rounds=1)), questions=mmlu)
    coordinator = federation.coordinator
    coordinator.transport = Faulty(coordinator.transport, "hum", phase, mode)
    run_dir = federation.run()
    record = json.loads((run_dir / "metrics.json").read_text())["rounds"][0]
    assert list(record["dropped"]) == ["hum"] and reason in record["dropped"]["hum"]
    assert "stem" in record["kd_loss"]
    if phase == protocol.SHARE:  # the server learned from the good client only
        assert set(record["selection"]["server"]) == {"self", "stem"}
    assert "dropped clients" in (run_dir / "summary.md").read_text()


def test_local_run_resumes_after_a_crash_with_nothing_lost(tmp_path, mmlu):
    whole = LocalFederation(parse_config(tiny_config(tmp_path, "whole")), questions=mmlu).run()
    config = parse_config(tiny_config(tmp_path, "crash"))
    crashing = LocalFederation(config, questions=mmlu)
    original = crashing.coordinator.run_round

    def crash_in_round_two(round_no):
        if round_no == 2:
            crashing.coordinator.transport.call(protocol.SHARE, {"stem": {"round": 2}})  # half a round of work
            raise KeyboardInterrupt
        return original(round_no)

    crashing.coordinator.run_round = crash_in_round_two
    with pytest.raises(KeyboardInterrupt):
        crashing.run()
    resumed = LocalFederation(config, questions=mmlu, resume=True).run()
    a = json.loads((whole / "metrics.json").read_text())["rounds"]
    b = json.loads((resumed / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in b] == [1, 2]
    for x, y in zip(a, b):
        assert x["kd_loss"] == pytest.approx(y["kd_loss"], rel=1e-5)
        assert x["private_loss"] == pytest.approx(y["private_loss"], rel=1e-5)
