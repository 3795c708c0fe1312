"""A client pins the public set it agreed to: a run whose public set hashes otherwise is refused by that client,
with both hashes named, so a server cannot turn the "public" set into a membership oracle."""

import json

import pytest

from fedmkt.config import ConfigError, parse_config
from fedmkt.data.questions import set_sha256
from fedmkt.federation.flower_client import node_overrides
from fedmkt.federation.local import LocalFederation
from tests.tiny import tiny_config


def pinned_run(tmp_path, mmlu, pin: str):
    raw = tiny_config(tmp_path, run_name=pin[:8], rounds=1)
    raw["clients"][1]["public_sha256"] = pin
    federation = LocalFederation(parse_config(raw), questions=mmlu)
    run_dir = federation.run()
    return federation, json.loads((run_dir / "metrics.json").read_text())


def test_a_client_pinned_to_another_public_set_refuses_the_run_naming_both_hashes(tmp_path, mmlu):
    federation, metrics = pinned_run(tmp_path, mmlu, "ab" * 32)
    actual = set_sha256(federation.split.public)
    dropped = metrics["rounds"][0]["dropped"]
    assert list(dropped) == ["hum"] and f"{'ab' * 8}..." in dropped["hum"] and f"{actual[:16]}..." in dropped["hum"]
    record = metrics["rounds"][0]
    assert "hum" not in record["private_loss"] and "hum" not in record["kd_loss"] and "stem" in record["kd_loss"]


def test_a_client_pinned_to_the_runs_public_set_takes_part(tmp_path, mmlu):
    probe = LocalFederation(parse_config(tiny_config(tmp_path, run_name="probe", rounds=1)), questions=mmlu)
    actual = set_sha256(probe.split.public)
    probe.store.close()
    _, metrics = pinned_run(tmp_path, mmlu, actual)
    assert not metrics["rounds"][0]["dropped"] and "hum" in metrics["rounds"][0]["kd_loss"]


def test_a_pin_must_be_a_sha256_in_the_config_and_in_the_node_config():
    raw = tiny_config("/tmp/unused", rounds=1)
    raw["clients"][0]["public_sha256"] = "f7f2ecf35cf507a8"  # the short hash packets carry is not a pin
    with pytest.raises(ConfigError, match="public_sha256"):
        parse_config(raw)
    config = parse_config(tiny_config("/tmp/unused", rounds=1))
    assert node_overrides({"public-set-sha256": "AB" * 32}, config, "stem") == {"public_sha256": "ab" * 32}
    with pytest.raises(ValueError, match="not a SHA-256"):
        node_overrides({"public-set-sha256": "123"}, config, "stem")
