"""BIG-bench tasks from an sdist-shaped archive, free-text questions and ROUGE-L."""

import io
import json
import tarfile

import pytest

from fedmkt.data import bigbench
from fedmkt.data.prompts import answer_text, prompt_text
from fedmkt.config import parse_config
from fedmkt.data.splits import federated_split
from fedmkt.evaluation import evaluate_questions, rouge_l

MC = {"name": "mc", "examples": [
    {"input": "How many legs do horses have?", "target_scores": {"four": 1, "two": 0, "six": 0}},
    {"input": "Two right answers", "target_scores": {"a": 1, "b": 1}},  # no single answer: skipped
    {"input": "Pick the colour of snow.", "target_scores": {"white": 1, "black": 0, "green": 0, "red": 0}}]}
FREE = {"name": "gen", "task_prefix": "Rewrite in capitals. ", "examples": [
    {"input": "cat", "target": "CAT"}, {"input": "dog", "target": ["DOG", "Dog"]}]}


def fake_sdist(path, tasks):
    with tarfile.open(path, "w:gz") as archive:
        for name, data in tasks.items():
            blob = json.dumps(data).encode()
            info = tarfile.TarInfo(f"bigbench-{bigbench.VERSION}/bigbench/benchmark_tasks/{name}/task.json")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))


@pytest.fixture
def sdist(tmp_path, monkeypatch):
    archive = tmp_path / "bigbench.tar.gz"
    fake_sdist(archive, {"mc": MC, "natural_instructions/sub1": FREE, "unused": MC})
    monkeypatch.setenv("FEDMKT_BIGBENCH_SDIST", str(archive))
    monkeypatch.setenv("FEDMKT_CACHE", str(tmp_path / "cache"))
    return archive


def test_only_the_named_tasks_are_extracted_and_parsed(sdist, tmp_path):
    questions = bigbench.load_bigbench(["mc", "natural_instructions/sub1"])
    cached = sorted(p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("task.json"))
    assert cached == [f"bigbench/{bigbench.VERSION}/mc/task.json",
                      f"bigbench/{bigbench.VERSION}/natural_instructions/sub1/task.json"]
    mc = [q for q in questions if q.domain == "mc"]
    assert len(mc) == 2 and all(not q.free_text for q in mc)
    assert [q.choices[q.answer] for q in mc] == ["four", "white"]
    free = [q for q in questions if q.domain == "natural_instructions/sub1"]
    assert [q.references for q in free] == [("CAT",), ("DOG", "Dog")]
    assert prompt_text(free[0]) == "Rewrite in capitals. cat\nAnswer:" and answer_text(free[0]) == " CAT"
    assert len({q.uid for q in questions}) == len(questions)
    sdist.unlink()  # later loads come from the cache
    assert [q.uid for q in bigbench.load_bigbench(["mc"])] == [q.uid for q in mc]


def test_unknown_task_is_named(sdist):
    with pytest.raises(FileNotFoundError, match="no_such_task"):
        bigbench.load_bigbench(["no_such_task"])


def test_choice_order_is_shuffled_but_fixed():
    many = {"examples": [{"input": f"q{i}", "target_scores": {"right": 1, "w1": 0, "w2": 0, "w3": 0}}
                         for i in range(40)]}
    first = bigbench.parse_task("t", many)
    assert len({q.answer for q in first}) > 1  # the right answer does not always sit first
    assert [q.choices for q in bigbench.parse_task("t", many)] == [q.choices for q in first]


def test_rouge_l_is_lcs_f1_over_words():
    assert rouge_l("the cat sat", "the cat sat") == 1.0
    assert rouge_l("", "x") == 0.0 and rouge_l("dog", "cat") == 0.0
    # LCS("the big cat", "the cat") = 2: P = 2/3, R = 1, F = 0.8
    assert rouge_l("The big CAT!", "the cat") == pytest.approx(0.8)


def test_mixed_split_and_free_text_evaluation(sdist, mmlu, smol_tok):
    from fedmkt.config import ModelSpec
    from fedmkt.models import load_model

    questions = mmlu + bigbench.load_bigbench(["mc", "natural_instructions/sub1"])
    config = parse_config({"clients": [{"name": "a", "domains": ["stem"]}],
                           "data": {"public_size": 6, "private_size": 4, "eval_size": 1, "eval_domains": ["mc", "natural_instructions/sub1"],
                                    "bigbench_tasks": ["mc", "natural_instructions/sub1"]}})
    split = federated_split(config, presets=questions)
    assert {q.domain for q in split.public} >= {"stem", "humanities"}
    loaded = load_model(ModelSpec(source="tiny:smollm2-135m-instruct"))
    free = evaluate_questions(loaded.model, loaded.tokenizer, split.evaluation["natural_instructions/sub1"], 64, 2)
    assert set(free) == {"rougeL", "exact_match", "ended", "n", "per_question", "answers"} and 0.0 <= free["rougeL"] <= 1.0
    assert len(free["answers"]) == free["n"]
    assert free["rougeL"] == pytest.approx(sum(free["per_question"]) / free["n"])
    mc = evaluate_questions(loaded.model, loaded.tokenizer, split.evaluation["mc"], 64, 2)
    assert mc["n"] == 1 and mc["acc"] in (0.0, 1.0)


@pytest.mark.slow
def test_real_bigbench_tasks_from_pypi():
    from fedmkt.config import RunConfig

    default_tasks = RunConfig().data.bigbench_tasks  # fetched in the same pass over the sdist
    questions = bigbench.load_bigbench(["social_iqa", "general_knowledge", *default_tasks])
    for task in default_tasks:  # the default run's sentiment domains: thousands of 4-way questions each
        sentiment = [q for q in questions if q.domain == task]
        assert len(sentiment) > 2000 and {len(q.choices) for q in sentiment} == {4}
        assert set(sentiment[0].choices) == {"positive", "negative", "neutral", "ambivalent"}
    social = [q for q in questions if q.domain == "social_iqa"]
    assert len(social) > 1500 and all(2 <= len(q.choices) and 0 <= q.answer < len(q.choices) for q in social)
    assert sum(len(q.choices) == 3 for q in social) > 0.9 * len(social)
    assert 50 < sum(q.domain == "general_knowledge" for q in questions) <= 70
