"""A trained party out of its run folder, in the forms plain transformers, peft and lm-eval load offline.

A run keeps each party's LoRA adapter in `round-N/<party>/`, whose adapter_config.json names the base
model as the run's config did (`smollm2-135m-instruct`): a fedmkt source, not a Hub id, so
`AutoPeftModelForCausalLM` would look it up on the Hub. `export_party` writes either

    OUT/                 merged (default): the base with the adapter folded in, its tokenizer, and a
                         generation config that stops at the model's end of turn:
                         AutoModelForCausalLM.from_pretrained(OUT); lm-eval --model hf --model_args pretrained=OUT
or, with adapter_only,
    OUT/base/            the base model and tokenizer as fedmkt loads them (from its cache: no download)
    OUT/adapter/         the adapter, its base_model_name_or_path pointing at OUT/base (absolute):
                         AutoPeftModelForCausalLM.from_pretrained(OUT/adapter);
                         lm-eval --model hf --model_args pretrained=OUT/base,peft=OUT/adapter
with a README.md model card saying where it came from. `load_party` and `answer` serve `fedmkt generate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fedmkt.config import ConfigError, ModelSpec, RunConfig, load_config
from fedmkt.data.prompts import end_of_turn_id
from fedmkt.data.questions import Question
from fedmkt.evaluation import generate_answers
from fedmkt.files import atomic_folder, atomic_write_text, round_numbers
from fedmkt.models import LoadedModel, load_model


@dataclass
class SavedParty:
    """A party of a finished (or interrupted) run: which model, which adapter, how it is prompted."""

    name: str
    base: ModelSpec
    adapter: Path
    round: int
    system_prompt: str | None
    max_length: int
    seed: int  # the base's: a tiny test model's random weights depend on it


def run_config(run_dir: Path) -> RunConfig:
    """The config a run folder was made with."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.yaml")
    return load_config(path)


def _last_round(run_dir: Path, party: str) -> int:
    rounds = [n for n in round_numbers(run_dir) if (run_dir / f"round-{n}" / party / "adapter_model.safetensors").is_file()]
    if not rounds:
        raise FileNotFoundError(f"no adapter of '{party}' in {run_dir} (round-N/{party}/); on Flower a client's "
                                f"adapters are in its node's store: pass --adapter")
    return max(rounds)


def saved_party(run_dir: Path, party: str, round_no: int | None = None, adapter: Path | None = None,
                base: str | None = None) -> SavedParty:
    """The party `party` of the run in `run_dir`: its adapter after `round_no` (default: the last saved) or the
    folder `adapter`, on its base model (the run's config, or `base` where a node ran a model of its own)."""
    config = run_config(run_dir)
    names = ["server", *(c.name for c in config.clients)]
    if party not in names:
        raise ConfigError(f"no party '{party}' in {run_dir}: its parties are {names}")
    if adapter is None:
        round_no = _last_round(run_dir, party) if round_no is None else round_no
        adapter = run_dir / f"round-{round_no}" / party
    if not (adapter / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"no adapter in {adapter} (adapter_model.safetensors)")
    spec = config.model_for(party).model_copy(update={"device": "cpu", "device_map": None, "quantization": None})
    if base is not None:
        spec = spec.model_copy(update={"source": base})
    return SavedParty(party, spec, adapter, round_no if round_no is not None else -1,
                      config.system_prompt_for(party), config.train_for(party).max_length, config.seed)


def load_party(saved: SavedParty) -> LoadedModel:
    """Base model with the saved adapter attached (peft), ready to generate."""
    from peft import PeftModel

    loaded = load_model(saved.base, seed=saved.seed)
    model = PeftModel.from_pretrained(loaded.model, str(saved.adapter))
    model.eval()
    return LoadedModel(name=loaded.name, model=model, tokenizer=loaded.tokenizer, device=loaded.device)


def answer(saved: SavedParty, loaded: LoadedModel, prompts: list[str], max_new_tokens: int = 128) -> list[str]:
    """Greedy answers to instruction prompts, rendered as the party was trained (chat template, system prompt)."""
    questions = [Question(uid=i, domain="prompt", subject="prompt", question=p, references=("",),
                          turns=(("user", p),)) for i, p in enumerate(prompts)]
    return generate_answers(loaded.model, loaded.tokenizer, questions, saved.max_length, batch_size=4,
                            max_new_tokens=max_new_tokens, system=saved.system_prompt)


def _stop_at_end_of_turn(model, tokenizer) -> None:
    """The generation config a plain `generate` reads: stop at EOS or the model's end of turn, pad as trained."""
    model.generation_config.eos_token_id = sorted({tokenizer.eos_token_id, end_of_turn_id(tokenizer)} - {None})
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.use_cache = True


def _card(saved: SavedParty, run_dir: Path, how: str) -> str:
    lines = [
        f"# {saved.name} of fedmkt run `{run_dir.name}`", "",
        f"A LoRA adapter trained by fedmkt (federated mutual knowledge transfer) for party `{saved.name}`"
        + (f", after round {saved.round}" if saved.round >= 0 else "") + f", on base model `{saved.base.source}`.",
        "", f"Adapter taken from: `{saved.adapter}`", "",
        "## Load it (offline)", "", "```python", how, "```", "",
        "Prompts: the base model's chat template"
        + (f", with system prompt {json.dumps(saved.system_prompt)}" if saved.system_prompt else "")
        + " (as in training); answers end in the model's end-of-turn token, which the generation config "
          "stops at.", ""]
    return "\n".join(lines)


def export_party(run_dir: Path, party: str, out: Path, round_no: int | None = None, adapter: Path | None = None,
                 base: str | None = None, adapter_only: bool = False) -> Path:
    """Write the party to `out` (see the module docstring); an existing `out` is refused, never overwritten."""
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose another --out")
    saved = saved_party(run_dir, party, round_no, adapter, base)
    loaded = load_party(saved)

    def write_merged(folder: Path) -> None:
        merged = loaded.model.merge_and_unload()
        _stop_at_end_of_turn(merged, loaded.tokenizer)
        merged.save_pretrained(folder)
        loaded.tokenizer.save_pretrained(folder)
        how = (f"from transformers import AutoModelForCausalLM, AutoTokenizer\n"
               f"model = AutoModelForCausalLM.from_pretrained({str(out.resolve())!r})\n"
               f"tokenizer = AutoTokenizer.from_pretrained({str(out.resolve())!r})")
        atomic_write_text(folder / "README.md", _card(saved, run_dir, how))

    def write_split(folder: Path) -> None:
        # The LoRA layers are still wrapped around the base's: unload() restores the plain modules first.
        plain = loaded.model.unload()
        _stop_at_end_of_turn(plain, loaded.tokenizer)
        plain.save_pretrained(folder / "base")
        loaded.tokenizer.save_pretrained(folder / "base")
        (folder / "adapter").mkdir()
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            (folder / "adapter" / name).write_bytes((saved.adapter / name).read_bytes())
        config_path = folder / "adapter" / "adapter_config.json"
        adapter_config = json.loads(config_path.read_text())
        adapter_config["base_model_name_or_path"] = str((out / "base").resolve())
        atomic_write_text(config_path, json.dumps(adapter_config, indent=2))
        loaded.tokenizer.save_pretrained(folder / "adapter")  # AutoPeftModel reads the tokenizer beside it
        how = (f"from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n"
               f"model = AutoPeftModelForCausalLM.from_pretrained({str((out / 'adapter').resolve())!r})\n"
               f"tokenizer = AutoTokenizer.from_pretrained({str((out / 'base').resolve())!r})")
        atomic_write_text(folder / "README.md", _card(saved, run_dir, how))

    return atomic_folder(out, write_split if adapter_only else write_merged)
