"""fedmkt's cloze scores against lm-evaluation-harness (the paper's evaluator), question for question.

lm-eval 0.4.13's HF model wrapper runs a task file written here over local questions (the cloze form:
"<question>\\nAnswer:" then " <choice>", each choice scored by its summed log-likelihood), offline, on a
saved model folder: a tiny random model and, in the slow test, the packaged SmolLM2. fedmkt's accuracy must
pick the same choice on every question. acc_norm differs by design in one way, checked here: lm-eval divides
each choice's log-likelihood by the choice's length in characters, fedmkt by its continuation's (the
choice with its leading space), so where two choices are close the normalized pick can differ.
"""

import json

import numpy as np
import pytest

from fedmkt.data.questions import Question
from fedmkt.evaluation import evaluate_questions

lm_eval = pytest.importorskip("lm_eval")

TASK = """task: fedmkt_local
dataset_path: json
dataset_kwargs:
  data_files: {test: %s}
test_split: test
output_type: multiple_choice
doc_to_text: "{{question}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: answer
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def sentiment_questions(count: int) -> list[Question]:
    texts = ["the room was spotless and the staff lovely", "cold food, rude waiter, never again",
             "it is a film", "a triumph of a movie", "broke after two days", "arrived on Tuesday",
             "best purchase this year", "I want my money back", "the plot moves along", "utterly charming"]
    labels = ("negative", "neutral", "positive")
    return [Question(uid=i, domain="d", subject="d", question=f"Review: {texts[i % len(texts)]} ({i})\n"
                     "Is its sentiment negative, neutral or positive?", choices=labels, answer=i % 3, cloze=True)
            for i in range(count)]


def lm_eval_samples(model_dir, questions, tmp_path) -> list[dict]:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    data = tmp_path / "questions.jsonl"
    data.write_text("".join(json.dumps({"question": q.question, "choices": list(q.choices), "answer": q.answer}) + "\n"
                            for q in questions))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "fedmkt_local.yaml").write_text(TASK % json.dumps(str(data)))
    out = simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["fedmkt_local"],
                          device="cpu", batch_size=1, log_samples=True, task_manager=TaskManager(include_path=str(tasks)))
    return sorted(out["samples"]["fedmkt_local"], key=lambda s: s["doc_id"])


def agree(loaded, questions, tmp_path, monkeypatch) -> tuple[list, list]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model_dir = tmp_path / "model"
    loaded.model.save_pretrained(model_dir)
    loaded.tokenizer.save_pretrained(model_dir)
    ours = evaluate_questions(loaded.model, loaded.tokenizer, questions, 256, 4)
    theirs = lm_eval_samples(model_dir, questions, tmp_path)
    assert [s["doc_id"] for s in theirs] == list(range(len(questions)))
    # Their per-choice log-likelihoods pick the same answer as ours on every question.
    picks = [int(np.argmax([r[0] for r in s["filtered_resps"]])) for s in theirs]
    assert [float(p == q.answer) for p, q in zip(picks, questions)] == ours["per_question"]
    assert [s["acc"] for s in theirs] == ours["per_question"]
    return ours, theirs


def test_cloze_scores_agree_with_lm_eval_on_a_tiny_model(tmp_path, monkeypatch):
    from fedmkt.config import ModelSpec
    from fedmkt.models import load_model

    loaded = load_model(ModelSpec(source="tiny:smollm2-135m-instruct"), seed=3)
    questions = sentiment_questions(12)
    ours, theirs = agree(loaded, questions, tmp_path, monkeypatch)
    # acc_norm: lm-eval's by the choice's length, ours by the continuation's (one character more each).
    norm = [int(np.argmax([r[0] / len(c) for r, c in zip(s["filtered_resps"], q.choices)])) == q.answer
            for s, q in zip(theirs, questions)]
    assert [float(x) for x in norm] == [s["acc_norm"] for s in theirs]


@pytest.mark.slow
def test_cloze_scores_agree_with_lm_eval_on_the_packaged_smollm2(tmp_path, monkeypatch):
    from fedmkt.config import ModelSpec
    from fedmkt.models import load_model

    ours, _ = agree(load_model(ModelSpec(source="smollm2-135m-instruct")), sentiment_questions(10), tmp_path,
                    monkeypatch)
    assert 0 < ours["acc"] <= 1
