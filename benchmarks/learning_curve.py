"""Does a packaged model learn a task from its training data? Accuracy after private fine-tuning on N
examples against zero-shot, on the same held-out questions, with the paired 95% interval.

A task can only show knowledge transfer if fine-tuning on it moves the models well above zero-shot (the
FedMKT paper picks such tasks: RTE standalone is 6-13 points above zero-shot there). This measures it for
one client, the way a run would train it (same split, adapter, schedule and scoring), with a fresh adapter
for every N.

    PYTHONPATH=. python -m benchmarks.learning_curve   # the default run's two client domains, N = 0, 128, 256
    PYTHONPATH=. python -m benchmarks.learning_curve --task epistemic_reasoning --format letters --sizes 0,256

It also times the held-out evaluation with each prompt run once for all its choices against every choice
run in full, on the same questions (the answers must be identical).
"""

from __future__ import annotations

import argparse

from benchmarks.common import record, timed


def curve(task: str, source: str, sizes: list[int], eval_size: int, epochs: int, learning_rate: float,
          scoring: str = "letter", choice_format: str = "letters", seed: int = 0) -> list[dict]:
    from fedmkt.config import parse_config
    from fedmkt.data.mmlu import DOMAINS as MMLU_DOMAINS
    from fedmkt.data.vader import DOMAINS as VADER_DOMAINS
    from fedmkt.federation.setup import federated_split, load_questions, make_client
    from fedmkt.stats import paired_difference

    config = parse_config({
        "seed": seed, "clients": [{"name": "learner", "model": {"source": source}, "domains": [task]}],
        "data": {"bigbench_tasks": [] if task in MMLU_DOMAINS or task in VADER_DOMAINS else [task], "public_size": 1, "private_size": max(sizes), "eval_size": eval_size,
                 "eval_domains": [task], "eval_scoring": scoring,
                 "choice_format": choice_format},
        "train": {"learning_rate": learning_rate}, "fedmkt": {"private_epochs": epochs}})
    split = federated_split(config, load_questions(config))
    party = make_client(config, "learner", split, None).party
    held_out = split.evaluation[task]
    initial, private = party.adapter_state(), party.private
    zero_shot = None
    rows = []
    for size in sizes:
        party.load_adapter_state(initial)
        party.private = private[:size]
        done, trained = timed(party.train_private) if size else (None, 0.0)
        loss = done.loss if done is not None else float("nan")
        result, evaluated = timed(party.evaluate, held_out)
        scores = result["per_question"]
        if zero_shot is None:
            zero_shot = scores if size == 0 else party_zero_shot(party, initial, held_out)
        change = paired_difference(zero_shot, scores)
        rows.append({"benchmark": "learning_curve", "task": task, "model": source, "private": size, "epochs": epochs, "learning_rate": learning_rate,
                     "scoring": scoring, "format": choice_format, "eval": len(held_out),
                     "acc": round(sum(scores) / len(scores), 4), "vs_zero_shot": round(change.difference, 4),
                     "interval": [round(change.low, 4), round(change.high, 4)], "resolved": change.resolved,
                     "sft_loss": None if loss != loss else round(loss, 4), "train_s": round(trained, 1),
                     "eval_s": round(evaluated, 1)})
        print(rows[-1], flush=True)
    party.load_adapter_state(initial)
    rows += scorer_rows(party, held_out, task)
    print(rows[-1], flush=True)
    return rows


def scorer_rows(party, held_out, task: str) -> list[dict]:
    """The held-out evaluation timed both ways in one process: each prompt run once for all its choices
    (key/value cache) against every choice run as a full sequence; the answers must be the same."""
    from fedmkt.evaluation import evaluate_multiple_choice

    def score(shared_prompt: bool) -> dict:
        return evaluate_multiple_choice(party.model, party.tokenizer, held_out, party.train_spec.max_length,
                                        party.train_spec.batch_size, shared_prompt=shared_prompt)

    shared, shared_s = timed(score, True)
    full, full_s = timed(score, False)
    return [{"benchmark": "choice_scoring", "task": task, "model": party.source, "questions": len(held_out),
             "shared_prompt_s": round(shared_s, 1), "full_sequences_s": round(full_s, 1),
             "speedup": round(full_s / shared_s, 2),
             "same_answers": shared["per_question"] == full["per_question"]}]


def party_zero_shot(party, initial, held_out) -> list[float]:
    trained = party.adapter_state()
    party.load_adapter_state(initial)
    scores = party.evaluate(held_out)["per_question"]
    party.load_adapter_state(trained)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", action="append", help="a BIG-bench task or MMLU group; repeatable (default: the "
                                                        "default run's client domains)")
    parser.add_argument("--model", action="append", help="model source; repeatable (default: smollm2-135m-instruct)")
    parser.add_argument("--sizes", default="0,128,256", help="private examples, comma-separated (0: zero-shot)")
    parser.add_argument("--eval-size", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--scoring", choices=["letter", "text"], default="letter")
    parser.add_argument("--format", choices=["letters", "cloze"], default="cloze")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if not args.task:
        from fedmkt.config import RunConfig

        args.task = [d for c in RunConfig().clients for d in c.domains]
    rows = [row for model in args.model or ["smollm2-135m-instruct"] for task in args.task
            for row in curve(task, model, sizes, args.eval_size, args.epochs, args.learning_rate,
                                                       args.scoring, args.format)]
    record("learning_curve", rows)


if __name__ == "__main__":
    main()
