import pytest
import torch

from fedmkt import evaluation
from fedmkt.config import ModelSpec
from fedmkt.models import load_model


@pytest.fixture(scope="module")
def tiny():
    return load_model(ModelSpec(source="tiny:smollm2-135m-instruct"), seed=5)


def test_letter_fast_path_equals_the_general_scorer(tiny, mmlu, monkeypatch):
    questions = mmlu[:12]
    fast = evaluation.evaluate_multiple_choice(tiny.model, tiny.tokenizer, questions, 256, 3, scoring="letter")
    monkeypatch.setattr(evaluation, "_single_token_letters", lambda tok, count: None)
    slow = evaluation.evaluate_multiple_choice(tiny.model, tiny.tokenizer, questions, 256, 3, scoring="letter")
    assert fast == slow and fast["n"] == 12
    assert set(fast) == {"acc", "n", "per_question"}  # no acc_norm that would only repeat acc
    assert len(fast["per_question"]) == 12 and sum(fast["per_question"]) / 12 == pytest.approx(fast["acc"])


def test_a_model_that_always_says_b_scores_the_share_of_b(tiny, mmlu):
    questions = mmlu[:40]
    b_id = tiny.tokenizer(" B", add_special_tokens=False)["input_ids"][0]

    class SaysB(torch.nn.Module):
        config = tiny.model.config

        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, logits_to_keep, **_):
            logits = torch.zeros(input_ids.shape[0], logits_to_keep, self.config.vocab_size)
            logits[..., b_id] = 10.0
            return type("Out", (), {"logits": logits})()

    result = evaluation.evaluate_multiple_choice(SaysB(), tiny.tokenizer, questions, 256, 4, scoring="letter")
    assert result["acc"] == pytest.approx(sum(q.answer == 1 for q in questions) / 40)
    assert result["per_question"] == [float(q.answer == 1) for q in questions]  # in the set's order


@pytest.mark.parametrize("cloze", [False, True])
def test_text_scoring_ranks_choices_by_summed_and_length_normalised_log_likelihood(tiny, mmlu, cloze):
    """acc and acc_norm against a direct computation: one forward pass per choice, no batching. Cloze
    questions are scored by their choices' text even when letter scoring is asked for."""
    from dataclasses import replace

    from fedmkt.data.encoding import encode
    from fedmkt.data.prompts import choice_text, prompt_text

    questions = [replace(q, cloze=cloze) for q in mmlu[:6]]
    if cloze:  # lm-eval's cloze form: no lettered options, the answer is the choice itself
        q = questions[0]
        assert prompt_text(q) == f"{q.question}\nAnswer:" and choice_text(q, 2) == f" {q.choices[2]}"
    result = evaluation.evaluate_multiple_choice(tiny.model, tiny.tokenizer, questions, 256, 2,
                                                 scoring="letter" if cloze else "text")
    correct = correct_norm = 0
    for q in questions:
        sums, norms = [], []
        for i in range(len(q.choices)):
            e = encode(tiny.tokenizer, q.uid, prompt_text(q), choice_text(q, i), 256)
            with torch.no_grad():
                logp = torch.log_softmax(tiny.model(input_ids=torch.from_numpy(e.input_ids[None])).logits[0].float(), -1)
            targets = torch.tensor(e.input_ids[e.answer_start:])
            total = logp[e.answer_start - 1:-1].gather(-1, targets[:, None]).sum().item()
            sums.append(total)
            norms.append(total / len(choice_text(q, i)))
        correct += int(max(range(len(sums)), key=sums.__getitem__) == q.answer)
        correct_norm += int(max(range(len(norms)), key=norms.__getitem__) == q.answer)
    assert result["acc"] == pytest.approx(correct / 6) and result["acc_norm"] == pytest.approx(correct_norm / 6)


def test_free_text_generation_keeps_the_end_of_a_long_prompt(tiny, monkeypatch):
    """A prompt longer than max_length is cut from the left, as in training: "Answer:" stays."""
    from fedmkt.data.questions import Question

    long = Question(uid=1, domain="d", subject="s", question="word " * 400 + "What is the capital of France?",
                    references=("Paris",))
    seen = []

    def fake_generate(input_ids, **kwargs):
        seen.append(input_ids)
        return torch.cat([input_ids, input_ids[:, -1:]], dim=1)

    monkeypatch.setattr(tiny.model, "generate", fake_generate)
    evaluation.generate_answers(tiny.model, tiny.tokenizer, [long], max_length=64, batch_size=1)
    prompt = tiny.tokenizer.decode(seen[0][0], skip_special_tokens=True)
    assert seen[0].shape[1] == 64 and prompt.rstrip().endswith("Answer:") and "France" in prompt
    assert tiny.tokenizer.truncation_side == "right"  # restored


def test_an_instruction_answer_ends_at_the_end_of_turn_and_is_counted_as_ended(tiny, monkeypatch):
    from fedmkt.data.questions import Question

    tok = tiny.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    q = Question(uid=1, domain="d", subject="s", question="Convert 2 km to m.", references=("2000 m",),
                 turns=(("user", "Convert 2 km to m."),))
    answer = tok("2000 m\nmore", add_special_tokens=False)["input_ids"]
    stops_seen = []

    def fake_generate(input_ids, eos_token_id, max_new_tokens, **kwargs):  # stops at the end of turn, or never
        stops_seen.append(eos_token_id)
        tail = answer + [end] if ended else (answer * max_new_tokens)[:max_new_tokens]
        return torch.cat([input_ids, torch.tensor([tail])], dim=1)

    monkeypatch.setattr(tiny.model, "generate", fake_generate)
    for ended in (True, False):
        result = evaluation.evaluate_free_text(tiny.model, tok, [q], max_length=64, batch_size=1)
        assert result["ended"] == float(ended) and end in stops_seen[-1]
    # An instruction answer is not cut at its first newline: all of it is the answer.
    assert evaluation.generate_answers(tiny.model, tok, [q], 64, 1, max_new_tokens=12)[0].startswith("2000 m\nmore")


@pytest.mark.parametrize("family", ["smollm2-135m-instruct", "gemma3-270m"])
def test_scoring_a_prompt_once_for_all_its_choices_equals_scoring_every_choice_in_full(mmlu, family):
    """The key/value-cache scorer against the full-sequence one: the same summed log-probabilities (left-padded
    prompts of different lengths, continuations of different lengths, questions with 2 to 4 choices)."""
    from dataclasses import replace

    from fedmkt.data.encoding import encode
    from fedmkt.data.prompts import prompt_text
    from fedmkt.training import ComputeClock

    loaded = load_model(ModelSpec(source=f"tiny:{family}"), seed=2)
    questions = [replace(q, cloze=True, choices=q.choices[:2 + i % 3], answer=0) for i, q in enumerate(mmlu[:7])]
    rows = [[encode(loaded.tokenizer, q.uid, prompt_text(q), evaluation._continuation(q, i, "text"), 256)
             for i in range(len(q.choices))] for q in questions]
    from fedmkt.progress import SILENT

    args = (3, loaded.tokenizer.pad_token_id, torch.device("cpu"), ComputeClock(), SILENT.task("", 0))
    with torch.no_grad():
        full = evaluation._choice_scores(loaded.model.eval(), rows, *args)
        cached = evaluation._choice_scores_shared_prompt(loaded.model, rows, *args)
    assert len(full) == sum(len(q.choices) for q in questions)
    assert cached == pytest.approx(full, rel=1e-4, abs=1e-4)
    with torch.no_grad():  # several batches of length-sorted prompts: scores still come back in question order
        small_batches = evaluation._choice_scores_shared_prompt(loaded.model, rows, 1, *args[1:])
    assert small_batches == pytest.approx(full, rel=1e-4, abs=1e-4)
    # And through the public call: the same answers either way.
    both = [evaluation.evaluate_multiple_choice(loaded.model, loaded.tokenizer, questions, 256, 3, shared_prompt=s)
            for s in (True, False)]
    assert both[0]["per_question"] == both[1]["per_question"] and both[0]["acc_norm"] == both[1]["acc_norm"]
