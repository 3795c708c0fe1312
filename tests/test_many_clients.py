"""Many clients written once: a `clients: {count, template, partition}` group, private sets cut by Flower
Datasets' partitioners, and a 64-client federation that samples 8 clients a round (tiny models)."""

import collections
import json

import pytest

from fedmkt.config import ConfigError, parse_config
from fedmkt.data.splits import federated_split
from fedmkt.federation.local import LocalFederation
from tests.tiny import tiny_base

TEMPLATE = {"model": {"source": "tiny:smollm2-135m-instruct"}}


def group(count, scheme="iid", size=None, **partition):
    return {"count": count, "template": TEMPLATE,
            "partition": {"data": {"source": "mmlu", "size": size or 2 * count}, "scheme": scheme, **partition}}


@pytest.mark.parametrize("scheme, options", [("iid", {}), ("dirichlet", {"alpha": 0.3, "min_size": 0}),
                                             ("pathological", {"classes_per_client": 1})])
def test_a_group_partitions_one_set_into_disjoint_private_sets_every_party_cuts_alike(mmlu, scheme, options):
    config = parse_config({**tiny_base(), "clients": group(8, scheme, size=64, by="domain", **options)})
    assert [c.name for c in config.clients] == [f"client-{i}" for i in range(8)]
    split = federated_split(config, presets=mmlu)
    drawn = [q.uid for part in split.private.values() for q in part]
    assert len(drawn) == len(set(drawn)) == 64 and not set(drawn) & {q.uid for q in split.public}
    domains = [collections.Counter(q.domain for q in part) for part in split.private.values()]
    if scheme == "iid":
        assert all(len(part) == 8 and len(d) == 4 for part, d in zip(split.private.values(), domains))
    if scheme == "pathological":
        assert all(len(d) <= 1 for d in domains)
    alone = federated_split(config, clients=["client-5"], presets=mmlu)  # as that client's node draws it
    assert list(alone.private) == ["client-5"]
    assert [q.uid for q in alone.private["client-5"]] == [q.uid for q in split.private["client-5"]]


def test_a_group_refuses_what_it_gives_each_client_itself():
    with pytest.raises(ConfigError, match="`name` and `part` are given to each client"):
        parse_config({**tiny_base(), "clients": {"count": 2, "template": {"name": "x"}}})
    with pytest.raises(ConfigError, match="parts of private_partition must be 0..1"):
        parse_config({**tiny_base(), "private_partition": {"data": {"source": "mmlu"}},
                      "clients": [{"name": "a", "part": 0}, {"name": "b", "part": 2}]})


def test_sixty_four_clients_sample_eight_a_round_and_only_those_train(tmp_path, mmlu):
    config = parse_config({**tiny_base(clients_per_round=8, evaluate_every=2), "clients": group(64),
                           "run_name": "many", "output_dir": str(tmp_path)})
    run_dir = LocalFederation(config, questions=mmlu).run()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rounds = metrics["rounds"]
    assert [len(r["sampled"]) for r in rounds] == [8, 8] and rounds[0]["sampled"] != rounds[1]["sampled"]
    for record in rounds:
        assert not record["dropped"]
        assert set(record["private_loss"]) == set(record["sampled"])
        assert set(record["kd_loss"]) == {"server", *record["sampled"]}
        assert set(record["selection"]["server"]) <= {"self", *record["sampled"]}
    assert len(rounds[1]["evaluation"]) == 65 and len(metrics["zero_shot"]) == 65
