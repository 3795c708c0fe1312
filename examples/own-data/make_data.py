"""Writes the example's data files (already committed; rerun to regenerate them byte for byte).

A small unit-conversion assistant: two clients hold different private skills (lengths and masses in
one, times in the other), the public set mixes every kind, and the server and one client keep held-out
evaluation sets. Every answer is computed here, so all of it is correct by construction.

    python examples/own-data/make_data.py
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

HERE = Path(__file__).parent

LENGTH = [("kilometres", "metres", 1000), ("metres", "centimetres", 100), ("centimetres", "millimetres", 10),
          ("kilograms", "grams", 1000), ("tonnes", "kilograms", 1000)]
TIME = [("hours", "minutes", 60), ("minutes", "seconds", 60), ("days", "hours", 24), ("weeks", "days", 7)]


def conversion(rng: random.Random, table) -> tuple[str, str]:
    big, small, factor = rng.choice(table)
    n = rng.randint(2, 40)
    return f"Convert {n} {big} to {small}.", f"{n * factor} {small}"


def rows(rng: random.Random, table, count: int, seen: set[str]) -> list[tuple[str, str]]:
    out = []
    while len(out) < count:
        prompt, response = conversion(rng, table)
        if prompt not in seen:  # every file holds different questions
            seen.add(prompt)
            out.append((prompt, response))
    return out


def quiz(rng: random.Random, count: int) -> list[dict]:
    out = []
    for big, small, factor in (LENGTH + TIME)[:count]:
        wrong = sorted({factor * 10, factor // 10 or 2, factor + 12} - {factor})[:3]
        choices = [str(factor), *map(str, wrong)]
        rng.shuffle(choices)
        article = "an" if big[0] in "aeiouh" else "a"
        out.append({"question": f"How many {small} are in {article} {big[:-1]}?", "choices": choices,
                    "answer": "ABCD"[choices.index(str(factor))]})
    return out


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def main() -> None:
    rng = random.Random(2025)
    seen: set[str] = set()
    public = rows(rng, LENGTH + TIME, 32, seen)
    write_jsonl(HERE / "public.jsonl", [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]}
                                        for p, r in public])
    write_jsonl(HERE / "eval.jsonl", [{"prompt": p, "response": r} for p, r in rows(rng, LENGTH + TIME, 24, seen)])
    write_jsonl(HERE / "quiz.jsonl", quiz(rng, 9))
    metric = HERE / "metric"
    metric.mkdir(exist_ok=True)
    write_jsonl(metric / "private.jsonl", [{"prompt": p, "response": r} for p, r in rows(rng, LENGTH, 40, seen)])
    write_jsonl(metric / "eval.jsonl", [{"prompt": p, "response": r} for p, r in rows(rng, LENGTH, 12, seen)])
    clock = HERE / "clock"
    clock.mkdir(exist_ok=True)
    with open(clock / "private.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "output"])
        writer.writerows(rows(rng, TIME, 40, seen))


if __name__ == "__main__":
    main()
