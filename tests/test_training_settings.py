"""Models and training as users run them: Hub ids offline, per-party settings, trainer features, per-step
metrics, `fedmkt config` / `--set`, and the errors a wrong setting gets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fedmkt.config import ConfigError, LoraSpec, ModelSpec, RunConfig, TrainSpec, parse_config
from fedmkt.config_yaml import commented_yaml, set_field
from fedmkt.data.encoding import encode_questions
from fedmkt.models import ModelNotFoundError, attach_lora, linear_layer_names, load_model, prune_layers
from fedmkt.progress import SILENT
from fedmkt.training import ComputeClock, train_lora
from tests.tiny import tiny_base

BIN = Path(sys.executable).parent


def test_per_party_settings_merge_over_the_run_and_name_their_field():
    config = parse_config({**tiny_base(), "server": {"source": "tiny:gemma3-270m", "train": {"learning_rate": 3e-5}},
                           "lora": {"r": 8}, "train": {"learning_rate": 3e-4, "weight_decay": 0.0}})
    config.clients[1].model.lora.target_modules = ["q_proj", "v_proj"]
    assert config.train_for("server").learning_rate == 3e-5 and config.train_for("server").weight_decay == 0.0
    assert config.train_for("stem").learning_rate == 3e-4
    assert config.lora_for("hum").target_modules == ["q_proj", "v_proj"] and config.lora_for("hum").r == 8
    assert config.lora_for("stem").target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    bad = tiny_base()
    bad["clients"][0]["model"]["train"] = {"learning_rate": -1}
    with pytest.raises(ConfigError, match=r"clients.0.model.train.learning_rate"):
        parse_config(bad)
    bad["clients"][0]["model"]["train"] = {"warmup_ratio": 2.0}
    with pytest.raises(ConfigError, match=r"clients.0.model.train.warmup_ratio"):
        parse_config(bad)


def test_fedmkt_config_prints_the_whole_default_that_reads_back():
    printed = subprocess.run([str(BIN / "fedmkt"), "config"], capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert "# spread the model over GPUs" in printed.stdout and "gradient_accumulation: 1" in printed.stdout
    assert parse_config(yaml.safe_load(printed.stdout)).model_dump() == RunConfig().model_dump()
    assert commented_yaml(RunConfig()) in printed.stdout


def test_set_assigns_nested_fields_and_list_items():
    data = RunConfig().model_dump(mode="json")
    data = set_field(data, "train.learning_rate=1e-4")
    data = set_field(data, "clients.1.model.source=org/model")
    data = set_field(data, "fedmkt.rounds=3")
    data = set_field(data, "server.lora.target_modules=[q_proj, v_proj]")
    config = parse_config(data)
    assert config.train.learning_rate == 1e-4 and config.fedmkt.rounds == 3
    assert config.clients[1].model.source == "org/model" and config.clients[0].model.source == "smollm2-135m-instruct"
    assert config.lora_for("server").target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="expected field.path=value"):
        set_field(data, "train.learning_rate")
    with pytest.raises(ConfigError, match=r"`clients.5` is not an item of a list of 2"):
        set_field(data, "clients.5.name=x")
    with pytest.raises(ConfigError, match=r"fedmkt.typo"):
        parse_config(set_field(data, "fedmkt.typo=1"))
    with pytest.raises(ConfigError, match=r"`fedmkt.rounds` holds no fields"):
        set_field(data, "fedmkt.rounds.nope=1")


def tiny_examples(mmlu, tokenizer, n=10):
    return encode_questions(tokenizer, mmlu[:n], 96)


def test_accumulation_warmup_cosine_and_clipping(mmlu, monkeypatch):
    loaded = load_model(ModelSpec(source="tiny:smollm2-135m-instruct"))
    model = attach_lora(loaded.model, LoraSpec())
    examples = tiny_examples(mmlu, loaded.tokenizer)
    clipped = []
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, n: clipped.append(n) or real_clip(p, n))
    steps = []
    spec = TrainSpec(learning_rate=1e-3, batch_size=2, gradient_accumulation=2, warmup_ratio=0.3, schedule="cosine",
                     max_grad_norm=0.5)
    train_lora(model, examples, loaded.tokenizer.pad_token_id, spec, 2, seed=1, clock=ComputeClock(),
               reporter=SILENT, description="sft", on_step=steps.append)
    # 10 examples, batches of 2: 5 passes an epoch, groups of 2 -> 3 optimizer steps an epoch (the last short).
    assert len(steps) == 6 and clipped == [0.5] * 6
    rates = [s["learning_rate"] for s in steps]
    assert rates[0] == 0 and rates[1] == pytest.approx(1e-3)  # warmup: int(0.3 * 6) = 1 step, from 0
    assert rates[1] > rates[3] > rates[5] > 0  # cosine decay
    assert all(s["tokens_per_s"] > 0 and s["loss"] > 0 for s in steps)


def test_dropout_depends_on_the_call_seed_only(mmlu):
    def adapter(seed, noise_before):
        loaded = load_model(ModelSpec(source="tiny:smollm2-135m-instruct"), seed=0)
        torch.manual_seed(0)
        model = attach_lora(loaded.model, LoraSpec(dropout=0.3))
        torch.rand(noise_before)  # whatever else drew from the global generator before
        train_lora(model, tiny_examples(mmlu, loaded.tokenizer, 6), loaded.tokenizer.pad_token_id,
                   TrainSpec(learning_rate=1e-2, batch_size=3), 1, seed=seed, clock=ComputeClock(), reporter=SILENT,
                   description="sft")
        return torch.cat([p.detach().flatten() for n, p in model.named_parameters() if "lora_" in n])

    assert torch.equal(adapter(5, 1), adapter(5, 7))
    assert not torch.equal(adapter(5, 1), adapter(6, 1))


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=300, n_positions=64,
                                      bos_token_id=0, eos_token_id=0))


def test_lora_targets_per_model_family_and_all_linear():
    gpt2 = attach_lora(tiny_gpt2(), LoraSpec(target_modules=["c_attn"]), source="org/gpt2-like")
    assert gpt2.peft_config["default"].base_model_name_or_path == "org/gpt2-like"
    assert any("c_attn.lora_A" in n for n, _ in gpt2.named_parameters())
    with pytest.raises(ValueError, match=r"\['q_proj', 'k_proj', 'v_proj', 'o_proj'\] are not linear layers of "
                                         r"GPT2LMHeadModel; its linear layers are \['c_attn', 'c_fc', 'c_proj'"):
        attach_lora(tiny_gpt2(), LoraSpec())
    llama = load_model(ModelSpec(source="tiny:smollm2-135m-instruct")).model
    names = linear_layer_names(llama)
    wrapped = attach_lora(llama, LoraSpec(target_modules="all-linear"))
    adapted = {n.split(".")[-4] for n, _ in wrapped.named_parameters() if "lora_A" in n}
    assert adapted == set(names) - {"lm_head"}  # every linear layer but the output head


def test_wrong_settings_get_clear_errors():
    if torch.cuda.is_available():
        pytest.skip("checks the no-GPU errors")
    with pytest.raises(ValueError, match="device_map: auto spreads a model over GPUs, but no CUDA device"):
        load_model(ModelSpec(source="tiny:smollm2-135m-instruct", device_map="auto"))
    with pytest.raises(ValueError, match="no CUDA device is available"):
        load_model(ModelSpec(source="tiny:smollm2-135m-instruct", device="cuda"))
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ModelNotFoundError, match="needs bitsandbytes; install it with: pip install bitsandbytes"):
            load_model(ModelSpec(source="tiny:smollm2-135m-instruct", quantization="4bit"))
    with pytest.raises(ValueError, match="cannot find the decoder layer list of GPT2LMHeadModel"):
        prune_layers(tiny_gpt2(), 1)


def hub_cache(root: Path, repo: str) -> Path:
    """A Hugging Face Hub cache holding `repo` (a tiny SmolLM2-family model), laid out as the Hub client
    writes it: models--org--name/refs/main names a snapshot folder with the files."""
    loaded = load_model(ModelSpec(source="tiny:smollm2-135m-instruct"))
    folder = root / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = folder / "snapshots" / commit
    loaded.model.save_pretrained(snapshot)
    loaded.tokenizer.save_pretrained(snapshot)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    return root / "hub"


def test_hub_id_offline_with_per_party_settings_through_config_and_set(tmp_path):
    repo = "fedmkt-test/tiny-smol"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache(tmp_path, repo)),
               TOKENIZERS_PARALLELISM="false")
    base = tmp_path / "base.yaml"
    base.write_text(subprocess.run([str(BIN / "fedmkt"), "config"], capture_output=True, text=True, env=env,
                                   timeout=120, check=True).stdout)
    sets = {"run_name": "hub", "output_dir": str(tmp_path / "runs"), "server.source": "tiny:gemma3-270m",
            "clients.0.model.source": repo, "clients.1.model.source": repo, "data.public_size": 6,
            "data.private_size": 6, "data.eval_size": 3, "train.max_length": 96, "train.batch_size": 3,
            "train.learning_rate": 5e-3, "fedmkt.rounds": 2, "server.train.learning_rate": 1e-3,
            "clients.1.model.lora.r": 4, "clients.1.model.train.gradient_accumulation": 2}
    command = [str(BIN / "fedmkt"), "run", "--config", str(base)]
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tmp_path / "runs" / "hub"
    assert "left in the run" in done.stdout  # progress lines that read well in a log file
    adapter = json.loads((run / "round-2" / "client-movies" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == repo and adapter["r"] == 4  # the source as given, its own r
    assert json.loads((run / "round-2" / "client-products" / "adapter_config.json").read_text())["r"] == 8
    steps = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    by_party = {}
    for step in steps:
        by_party.setdefault(step["party"], []).append(step)
    assert set(by_party) == {"server", "client-products", "client-movies"}
    assert {s["round"] for s in steps} == {1, 2} and {s["what"] for s in steps} >= {"private SFT", "distill"}
    assert max(s["learning_rate"] for s in by_party["server"]) <= 1e-3 < max(
        s["learning_rate"] for s in by_party["client-products"])
    # 6 private examples in batches of 3: 2 optimizer steps, or 1 with gradient accumulation 2.
    private = lambda party: [s for s in by_party[party] if s["what"] == "private SFT" and s["round"] == 1]
    assert len(private("client-products")) == 2 and len(private("client-movies")) == 1
    missing = subprocess.run([str(BIN / "fedmkt"), "run", "--config", str(base), "--set", "server.source=nobody/none"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode == 2
    assert "could not be resolved: offline (HF_HUB_OFFLINE=1)" in " ".join(missing.stdout.split())


def test_gradient_checkpointing_trains_a_lora_adapter(mmlu):
    loaded = load_model(ModelSpec(source="tiny:smollm2-135m-instruct", gradient_checkpointing=True))
    model = attach_lora(loaded.model, LoraSpec())
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    train_lora(model, tiny_examples(mmlu, loaded.tokenizer, 4), loaded.tokenizer.pad_token_id,
               TrainSpec(learning_rate=1e-2, batch_size=2), 1, seed=1, clock=ComputeClock(), reporter=SILENT,
               description="sft")
    assert model.base_model.model.is_gradient_checkpointing
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "lora_B" in n)


def test_gpu_benchmark_runs_its_smoke_shape_on_a_cpu():
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_gpu", "--smoke"], capture_output=True, text=True,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["smoke"] and row["kd_vs_sft_tokens_per_s"] > 0 and row["round_wall_vs_compute"] >= 1.0


def test_saving_an_adapter_never_looks_the_base_model_up(tmp_path, monkeypatch):
    import peft.utils.save_and_load as peft_save

    from fedmkt.models import save_adapter

    def no_network(*args, **kwargs):
        raise AssertionError("looked the base model up on the Hub")

    monkeypatch.setattr(peft_save, "check_file_exists_on_hf_hub", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = attach_lora(load_model(ModelSpec(source="tiny:smollm2-135m-instruct")).model, LoraSpec(),
                        source="HuggingFaceTB/SmolLM2-135M-Instruct")
    save_adapter(model, tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
