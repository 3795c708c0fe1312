"""Own data: every file format, both example shapes, the public-set hash, and every bad input named."""

import csv
import json
from pathlib import Path

import pytest

from fedmkt.config import SourceSpec, load_config, parse_config
from fedmkt.data.encoding import encode_question
from fedmkt.data.prompts import render
from fedmkt.data.sources import DataError, load_source
from fedmkt.data.splits import federated_split
from fedmkt.federation.local import LocalFederation
from fedmkt.federation.protocol import ClientFailure, Phase
from fedmkt.federation.setup import make_client
from fedmkt.knowledge import Expected, PacketError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own-data"

MC_ROWS = [{"question": "Which is a prime?", "choices": ["4", "6", "7", "9"], "answer": 2},
           {"question": "Water boils at sea level at?", "choices": ["90 C", "100 C", "110 C"], "answer": 1}]
CHAT_ROWS = [{"prompt": "Convert 2 km to m.", "response": "2000 m"},
             {"prompt": "Convert 3 h to min.", "response": "180 min"}]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def mc_files(tmp: Path) -> dict[str, SourceSpec]:
    """The same multiple-choice rows in every supported container."""
    import datasets

    out = {"jsonl": SourceSpec(source=str(write_jsonl(tmp / "mc.jsonl", MC_ROWS)))}
    (tmp / "mc.json").write_text(json.dumps(MC_ROWS))
    out["json"] = SourceSpec(source=str(tmp / "mc.json"))
    # CSV: one column per choice, letter answers, differently named columns.
    with open(tmp / "mc.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["stem", "A", "B", "C", "D", "key"])
        for row in MC_ROWS:
            choices = row["choices"] + [""] * (4 - len(row["choices"]))
            writer.writerow([row["question"], *choices, "ABCD"[row["answer"]]])
    out["csv"] = SourceSpec(source=str(tmp / "mc.csv"),
                            columns={"question": "stem", "choices": ["A", "B", "C", "D"], "answer": "key"})
    table = datasets.Dataset.from_list(MC_ROWS)
    table.to_parquet(str(tmp / "mc.parquet"))
    out["parquet"] = SourceSpec(source=str(tmp / "mc.parquet"))
    datasets.DatasetDict({"train": table, "test": table.select([0])}).save_to_disk(str(tmp / "mc-disk"))
    out["save_to_disk"] = SourceSpec(source=str(tmp / "mc-disk"))
    return out


def test_every_file_format_gives_the_same_questions(tmp_path):
    loaded = {kind: load_source(spec) for kind, spec in mc_files(tmp_path).items()}
    reference = loaded["jsonl"]
    assert [(q.question, q.choices, q.answer) for q in reference] == \
        [(r["question"], tuple(r["choices"]), r["answer"]) for r in MC_ROWS]
    for kind, questions in loaded.items():
        assert [q.uid for q in questions] == [q.uid for q in reference], kind  # uids from content: same rows, same ids
    test_split = load_source(SourceSpec(source=str(tmp_path / "mc-disk"), split="test"))
    assert [q.uid for q in test_split] == [reference[0].uid]


def test_instruction_rows_as_prompt_response_or_chat_messages(tmp_path):
    plain = load_source(SourceSpec(source=str(write_jsonl(tmp_path / "plain.jsonl", CHAT_ROWS))))
    messages = [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]}
                for r in CHAT_ROWS]
    chat = load_source(SourceSpec(source=str(write_jsonl(tmp_path / "chat.jsonl", messages))))
    assert [q.uid for q in plain] == [q.uid for q in chat]  # the same examples either way
    assert all(q.free_text and q.chat for q in plain) and plain[0].references == ("2000 m",)
    system = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello"}]}]
    turns = load_source(SourceSpec(source=str(write_jsonl(tmp_path / "sys.jsonl", system))))[0]
    assert turns.turns == (("system", "Be brief."), ("user", "Hi")) and turns.references == ("Hello",)


def test_instructions_use_the_chat_template_and_train_on_the_response_only(tmp_path, smol_tok, gemma_tok):
    q = load_source(SourceSpec(source=str(write_jsonl(tmp_path / "c.jsonl", CHAT_ROWS))))[0]
    chat, plain = render(q, smol_tok), render(q, gemma_tok)  # SmolLM2 ships a chat template, the Gemma GGUF none
    assert chat.prompt.endswith("<|im_start|>assistant\n") and "Convert 2 km to m." in chat.prompt
    assert plain.prompt == "Convert 2 km to m.\nAnswer:"
    for tok, end in ((smol_tok, "<|im_end|>"), (gemma_tok, "<eos>")):  # its template's end of turn, else EOS
        e = encode_question(tok, q, 256)
        # Loss positions: the response's tokens and the end of turn after them, so that a model learns to stop.
        assert tok.decode(e.answer_ids[:-1]).strip() == "2000 m" and tok.convert_ids_to_tokens(int(e.answer_ids[-1])) == end
        assert e.boundaries_known and e.loss_boundaries[0] == 0
    smol = encode_question(smol_tok, q, 256)
    assert smol.input_ids.tolist().count(smol_tok.convert_tokens_to_ids("<|im_start|>")) == 3  # no doubled specials


def test_a_system_prompt_reaches_training_and_evaluation_and_none_removes_the_templates_default(tmp_path, smol_tok,
                                                                                               gemma_tok):
    from fedmkt.data.prompts import NO_SYSTEM

    q = load_source(SourceSpec(source=str(write_jsonl(tmp_path / "c.jsonl", CHAT_ROWS))))[0]
    default = "You are a helpful AI assistant named SmolLM"
    assert default in render(q, smol_tok).prompt  # SmolLM2's template writes its own when there is none
    assert "Answer in metres." in render(q, smol_tok, "Answer in metres.").prompt
    assert default not in render(q, smol_tok, "Answer in metres.").prompt
    removed = render(q, smol_tok, NO_SYSTEM).prompt
    assert default not in removed and "Convert 2 km to m." in removed
    assert render(q, gemma_tok, NO_SYSTEM) == render(q, gemma_tok)  # no template, no default to remove
    own = load_source(SourceSpec(source=str(write_jsonl(tmp_path / "s.jsonl", [{"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}]}]))))[0]
    assert "Be brief." in render(own, smol_tok, "Answer in metres.").prompt  # an example's own turn wins
    # A party trains and is evaluated with it: its encodings of the public set, and the config's per-client word.
    config = parse_config({**own_config(tmp_path), "data": {**own_config(tmp_path)["data"], "system_prompt": "Be exact."}})
    config.clients[1].system_prompt = NO_SYSTEM
    assert config.system_prompt_for("metric") == "Be exact." and config.system_prompt_for("clock") == NO_SYSTEM
    federation = LocalFederation(config)
    metric = federation.runtimes["metric"].party
    public = next(e for e in metric.public if federation.split.public[0].uid == e.uid)
    assert "Be exact." in smol_tok.decode(public.input_ids[:public.answer_start])
    clock = federation.runtimes["clock"].party
    assert default not in smol_tok.decode(clock.public[0].input_ids)


def test_the_end_of_an_answer_aligns_exactly_across_tokenizers_and_maps_to_the_receivers_end(tmp_path, smol_tok,
                                                                                            gemma_tok):
    from fedmkt.alignment.sequence import align_by_boundaries
    from fedmkt.alignment.vocab import map_vocabularies
    from fedmkt.data.prompts import end_of_turn_id

    q = load_source(SourceSpec(source=str(write_jsonl(tmp_path / "c.jsonl", CHAT_ROWS))))[1]
    smol, gemma = encode_question(smol_tok, q, 256), encode_question(gemma_tok, q, 256)
    # The position predicting each model's end of turn starts at the answer's last byte in both, so it is
    # matched to the other's (the last loss position, never DTW's guess).
    assert align_by_boundaries(gemma, smol)[-1] == smol.n_loss - 1
    assert align_by_boundaries(smol, gemma)[-1] == gemma.n_loss - 1
    ids, _ = map_vocabularies(smol_tok, gemma_tok)
    assert ids[end_of_turn_id(smol_tok)] == end_of_turn_id(gemma_tok)
    # A multiple-choice answer (no turn to end) gets no end token.
    mc = load_source(SourceSpec(source=str(write_jsonl(tmp_path / "m.jsonl", MC_ROWS))))[0]
    assert end_of_turn_id(smol_tok) not in encode_question(smol_tok, mc, 256).answer_ids.tolist()


BAD_INPUTS = {
    "missing file": (lambda d: d / "nope.jsonl", "data file not found"),
    "empty file": (lambda d: (d / "empty.jsonl").write_text("") and None or d / "empty.jsonl", "is empty"),
    "a CSV with a header only": (lambda d: (d / "head.csv").write_text("prompt,response\n") and d / "head.csv",
                                 "holds a header (prompt, response) but no rows"),
    "row without a required column": (
        lambda d: write_jsonl(d / "m.jsonl", [MC_ROWS[0], {"question": "q?", "choices": ["a", "b"]}]),
        "row 2 (field `answer`): missing"),
    "answer index out of range": (
        lambda d: write_jsonl(d / "r.jsonl", [{"question": "q?", "choices": ["a", "b"], "answer": 2}]),
        "row 1 (field `answer`): 2 is out of range for 2 choices"),
    "answer letter out of range": (
        lambda d: write_jsonl(d / "l.jsonl", [{"question": "q?", "choices": ["a", "b"], "answer": "D"}]),
        "row 1 (field `answer`): letter 'D' is out of range for 2 choices (A-B)"),

    "a file mixing shapes": (lambda d: write_jsonl(d / "x.jsonl", [MC_ROWS[0], CHAT_ROWS[0]]),
                             "mixes shapes: row 1 is multiple choice, row 2 is an instruction"),
    "undecodable bytes": (lambda d: (d / "b.jsonl").write_bytes(
        json.dumps(MC_ROWS[0]).encode() + b'\n{"question": "caf\xe9?"}\n') and d / "b.jsonl",
        "line 2: bytes that are not UTF-8"),
    "a row of neither shape": (lambda d: write_jsonl(d / "n.jsonl", [{"text": "hello"}]),
                               "row 1: neither multiple choice"),
    "messages not ending with the response": (
        lambda d: write_jsonl(d / "t.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}]),
        "row 1 (field `messages`): the last turn must be the assistant's"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_file_row_and_field(tmp_path, case):
    make, message = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        load_source(SourceSpec(source=str(path)))
    assert path.name in str(error.value)


def test_one_column_per_choice_refuses_a_gap_and_allows_fewer_choices(tmp_path):
    path = tmp_path / "choices.csv"
    path.write_text("q,a,b,c,d,key\nWhich?,x,,z,w,C\n", encoding="utf-8")
    spec = SourceSpec(source=str(path), columns={"question": "q", "choices": ["a", "b", "c", "d"], "answer": "key"})
    # Compacted, key C would be scored against column d's text: refused, naming the row and the empty column.
    with pytest.raises(DataError, match=r"choices.csv row 1 .*column 'b' is empty but a later choice column is not"):
        load_source(spec)
    path.write_text("q,a,b,c,d,key\nWhich?,x,y,z,,C\n", encoding="utf-8")  # three choices in four columns
    q = load_source(spec)[0]
    assert q.choices == ("x", "y", "z") and q.answer == 2


@pytest.mark.parametrize("name, text", [("notes.csv", "prompt,response\nConvert 2 km to m.,2000 m\n"),
                                        ("notes.jsonl", '{"prompt": "Convert 2 km to m.", "response": "2000 m"}\n')])
def test_a_byte_order_mark_reads_as_the_same_rows(tmp_path, name, text):
    plain, marked = tmp_path / "plain" / name, tmp_path / "marked" / name  # one domain name
    for path in (plain, marked):
        path.parent.mkdir()
    plain.write_text(text, encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())  # as Excel saves "CSV UTF-8"
    assert load_source(SourceSpec(source=str(marked))) == load_source(SourceSpec(source=str(plain)))


def test_a_mapped_column_the_file_lacks_is_named(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", MC_ROWS)
    with pytest.raises(DataError, match=r"no column 'stem' \(columns.question\); its columns are"):
        load_source(SourceSpec(source=str(path), columns={"question": "stem"}))


def test_a_hub_dataset_offline_fails_with_a_clear_message(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="could not be loaded from the Hugging Face Hub or its local cache"):
        load_source(SourceSpec(source="fedmkt-tests/no-such-dataset"))


def own_config(out: Path, **changes) -> dict:
    """The example's config on tiny models, with small sets, as a test federation."""
    config = load_config(EXAMPLE / "config.yaml").model_dump(mode="json", exclude_none=True)
    config.update(output_dir=str(out), run_name="own", seed=1)
    config["server"]["source"] = "tiny:gemma3-270m"
    for client in config["clients"]:
        client["model"]["source"] = "tiny:smollm2-135m-instruct"
        for source in client["private"]["sources"]:
            source["source"] = str(ROOT / source["source"])
        client["private"]["size"] = 6
        if "eval" in client:
            client["eval"] = {"source": str(ROOT / client["eval"]["sources"][0]["source"]), "size": 3}
    config["data"]["public"] = {"source": str(EXAMPLE / "public.jsonl"), "size": 6}
    config["data"]["evaluation"] = {"conversions": {"source": str(EXAMPLE / "eval.jsonl"), "size": 3},
                                    "quiz": {"source": str(EXAMPLE / "quiz.jsonl"), "size": 3}}
    config["train"] = {"max_length": 96, "batch_size": 3, "learning_rate": 5e-3}
    config["fedmkt"] = {"rounds": 1, **changes}
    return config


def test_a_public_set_smaller_than_asked_is_refused_and_nothing_saved_is_lost(tmp_path):
    config = own_config(tmp_path)
    run = tmp_path / "own"
    run.mkdir()
    (run / "metrics.json").write_text('{"saved": true}')
    config["data"]["public"]["size"] = 500
    with pytest.raises(DataError, match=r"data.public: asked for 500 examples, but .*public.jsonl hold only 32"):
        LocalFederation(parse_config(config), resume=True)
    assert (run / "metrics.json").read_text() == '{"saved": true}'


def test_the_server_never_opens_private_data(tmp_path):
    config = own_config(tmp_path)
    config["clients"][0]["private"] = {"source": str(tmp_path / "not-on-this-machine.jsonl")}
    split = federated_split(parse_config(config), clients=[])  # what a Flower server computes
    assert split.private == {} and len(split.public) == 6 and set(split.evaluation) == {"conversions", "quiz"}
    with pytest.raises(DataError, match="not-on-this-machine.jsonl"):
        federated_split(parse_config(config), clients=["metric"])  # its own node does read it


def test_the_example_runs_with_both_shapes_and_client_side_evaluation(tmp_path):
    federation = LocalFederation(parse_config(own_config(tmp_path)))
    hashes = {party.public_hash for party in federation.parties}
    assert len(hashes) == 1  # every party derived the same public set
    run_dir = federation.run()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    final = metrics["rounds"][-1]
    assert not final["dropped"]
    server = final["evaluation"]["server"]
    assert set(server["conversions"]) == {"rougeL", "exact_match", "ended", "n", "per_question"}
    assert server["conversions"]["n"] == 3 and 0 <= server["conversions"]["ended"] <= 1
    assert len(server["conversions"]["per_question"]) == 3
    assert set(server["quiz"]) == {"acc", "n", "per_question"}  # letter scoring: no acc_norm
    metric = final["evaluation"]["metric"]
    assert metric["own"]["n"] == 3 and "own" not in metric["mean"]  # its own set, outside the shared means
    assert "own" not in final["evaluation"]["clock"]  # no eval file: nothing reported
    assert set(metrics["zero_shot"]["metric"]) == {"conversions", "quiz", "mean", "own"}
    summary = (run_dir / "summary.md").read_text()
    assert "## clients' own evaluation sets" in summary and "| metric | rougeL (n=3) |" in summary
    assert "private: " + str(EXAMPLE / "clock" / "private.csv") in summary


def test_a_party_holding_another_public_set_is_refused_naming_both_hashes(tmp_path):
    config = parse_config(own_config(tmp_path))
    federation = LocalFederation(config)
    other = parse_config({**own_config(tmp_path), "seed": 2})  # another draw: a different public set
    other_split = federated_split(other)
    assert other_split.public != federation.split.public
    impostor = make_client(other, "clock", other_split, None)
    server_hash, client_hash = federation.server.public_hash, impostor.party.public_hash
    with pytest.raises(ClientFailure, match=f"public set {server_hash}, client 'clock' holds {client_hash}"):
        impostor.handle(Phase.EVALUATE, {"round": 0, "public_set": server_hash})
    packet = impostor.party.share_knowledge()
    with pytest.raises(PacketError, match=f"public set {client_hash}, this party holds {server_hash}"):
        packet.check(Expected(labels={}, top_k=packet.top_k, public_set=server_hash))
    federation.runtimes["clock"] = impostor  # joins the run: dropped every round, the run goes on
    metrics = json.loads((federation.run() / "metrics.json").read_text())
    assert "public set mismatch" in metrics["rounds"][0]["dropped"]["clock"]
    assert "clock" not in metrics["rounds"][0]["kd_loss"] and "metric" in metrics["rounds"][0]["kd_loss"]


def test_set_shorthands_and_conflicting_private_sources_in_the_config():
    from fedmkt.config import ConfigError

    config = parse_config({"data": {"public": "p.jsonl", "evaluation": {"e": {"source": "e.csv", "size": 3}}},
                           "clients": [{"name": "a", "private": {"sources": [{"source": "a.jsonl"}], "size": 4}}]})
    assert config.data.public.sources[0].source == "p.jsonl" and config.data.public.size is None
    assert config.data.evaluation["e"].size == 3 and config.clients[0].private.size == 4
    with pytest.raises(ConfigError, match="names both `domains` and `private`"):
        parse_config({"clients": [{"name": "a", "domains": ["stem"], "private": "a.jsonl"}]})
    with pytest.raises(ConfigError, match=r"data.evaluation.*'own'"):
        parse_config({"data": {"evaluation": {"own": "e.jsonl"}}})
    with pytest.raises(ConfigError, match=r"columns.*unknown field"):
        parse_config({"data": {"public": {"source": "p.jsonl", "columns": {"text": "body"}}}})
