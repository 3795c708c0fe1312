"""One frozen base per model in a process: clients of one model share it, each with its own adapter, and
train exactly what they trained with a copy each."""

import json

from safetensors.torch import load_file

from fedmkt.config import parse_config
from fedmkt.federation.local import LocalFederation
from tests.tiny import tiny_config


def test_clients_of_one_model_share_its_base_and_train_what_a_copy_each_trains(tmp_path, mmlu):
    runs = {}
    for share in (True, False):
        config = parse_config(tiny_config(tmp_path, run_name=f"share-{share}", rounds=2, fedavg_slms=False))
        federation = LocalFederation(config, questions=mmlu, share_bases=share)
        stem, hum = (federation.runtimes[n].party for n in ("stem", "hum"))
        assert (stem.model is hum.model) == share and stem.model is not federation.server.model
        runs[share] = federation.run()
    for name in ("metrics.json",):
        one, two = (json.loads((runs[s] / name).read_text()) for s in (True, False))
        assert [{k: r[k] for k in ("private_loss", "kd_loss", "selection", "evaluation")} for r in one["rounds"]] == \
            [{k: r[k] for k in ("private_loss", "kd_loss", "selection", "evaluation")} for r in two["rounds"]]
        assert one["zero_shot"] == two["zero_shot"]
    for round_no in (1, 2):
        for party in ("server", "stem", "hum"):
            a, b = (load_file(str(runs[s] / f"round-{round_no}" / party / "adapter_model.safetensors"))
                    for s in (True, False))
            assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a), (round_no, party)
    config = json.loads((runs[True] / "round-1" / "hum" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny:smollm2-135m-instruct"
