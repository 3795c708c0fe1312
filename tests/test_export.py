"""A trained party leaves its run folder as users load models: plain transformers, peft, offline; its answers
are saved in the run folder; `fedmkt generate` answers as the party was trained."""

import json

import pytest
import torch

from fedmkt.config import parse_config
from fedmkt.export import export_party, load_party, saved_party
from fedmkt.federation.local import LocalFederation
from tests.test_own_data import own_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return LocalFederation(parse_config(own_config(out))).run()


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("adapter_only", [False, True])
def test_an_exported_party_loads_offline_in_plain_transformers_and_computes_what_it_computed(
        run_dir, tmp_path, monkeypatch, adapter_only):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_party(run_dir, "metric", tmp_path / "metric", adapter_only=adapter_only)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any Hub lookup would fail the load
    if adapter_only:
        model = AutoPeftModelForCausalLM.from_pretrained(str(out / "adapter"))
        tokenizer = AutoTokenizer.from_pretrained(str(out / "base"))
    else:
        model = AutoModelForCausalLM.from_pretrained(str(out))
        tokenizer = AutoTokenizer.from_pretrained(str(out))
    ours = load_party(saved_party(run_dir, "metric"))
    ids = torch.tensor([tokenizer("Convert 3 km to m.")["input_ids"]])
    assert torch.allclose(_logits(model, ids), _logits(ours.model, ids), atol=1e-4)
    # The adapter really is in there: the base alone computes something else.
    base = AutoModelForCausalLM.from_pretrained(str(out / "base")) if adapter_only else None
    if base is not None:
        assert not torch.allclose(_logits(base, ids), _logits(model, ids), atol=1e-4)
    # Generation stops where training taught the model to: its end of turn.
    stops = model.generation_config.eos_token_id
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in (stops if isinstance(stops, list) else [stops])
    assert "fedmkt run `own`" in (out / "README.md").read_text()


def test_export_refuses_an_existing_folder_and_an_unknown_party(run_dir, tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        export_party(run_dir, "metric", tmp_path / "taken")
    with pytest.raises(ValueError, match="no party 'nobody'.*its parties are \\['server', 'metric', 'clock'\\]"):
        export_party(run_dir, "nobody", tmp_path / "x")


def test_every_evaluation_saves_its_answers_with_question_ids_and_references(run_dir):
    rows = [json.loads(line) for line in (run_dir / "answers" / "round-1" / "server.jsonl").read_text().splitlines()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    scores = metrics["rounds"][0]["evaluation"]["server"]["conversions"]
    assert len(rows) == scores["n"] == 3 and [r["rougeL"] for r in rows] == scores["per_question"]
    assert all(set(r) == {"domain", "uid", "question", "references", "answer", "rougeL"} for r in rows)
    assert "answers" not in scores  # metrics.json keeps scores only
    assert (run_dir / "answers" / "round-0" / "server.jsonl").is_file()  # zero-shot too
    # A client's answers on the server's sets come up in its EVALUATE reply (through its wire form).
    client_rows = (run_dir / "answers" / "round-1" / "clock.jsonl").read_text().splitlines()
    assert [json.loads(r)["uid"] for r in client_rows] == [r["uid"] for r in rows]
    # A client's own held-out answers are written by the client, apart (on Flower: in its node's store).
    own = (run_dir / "answers" / "round-1" / "metric.own.jsonl").read_text().splitlines()
    assert len(own) == metrics["rounds"][0]["evaluation"]["metric"]["own"]["n"]


def test_generate_answers_a_prompt_with_a_saved_party(run_dir):
    from typer.testing import CliRunner

    from fedmkt.cli import app

    from fedmkt.export import answer

    prompts = ["Convert 4 km to m.", "Convert 5 g to mg."]
    result = CliRunner().invoke(app, ["generate", str(run_dir), *prompts, "--party", "clock", "--max-new-tokens", "5"])
    assert result.exit_code == 0, result.output
    saved = saved_party(run_dir, "clock")
    assert result.output == "".join(f"{a}\n" for a in answer(saved, load_party(saved), prompts, 5))
    missing = CliRunner().invoke(app, ["generate", str(run_dir), "hi", "--party", "clock", "--round", "7"])
    assert missing.exit_code == 2 and "round-7" in missing.output


def test_the_run_report_shows_answers_beside_their_references(run_dir):
    from fedmkt.report import write_run_report

    text = write_run_report(run_dir).read_text()
    section = text[text.index("## sample answers"):]
    first = json.loads((run_dir / "answers" / "round-1" / "server.jsonl").read_text().splitlines()[0])
    assert "### server" in section and "### metric.own" in section
    assert f"| {first['references'][0]} | 1 |" in section  # the final round's answer beside its reference
    assert "| 0 |" in section  # and the zero-shot one
