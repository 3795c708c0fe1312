"""Writes the triage example's data files (committed; rerun to regenerate them byte for byte).

A clinic triage assistant: a message describing a complaint gets one line of advice, whose first word is
the level of care. Two clients hold different services' private messages (a family practice, a children's
clinic), the public set mixes both, the server keeps a held-out set and each client one of its own. The
answers are short sentences that must end: a model that keeps writing after them is not usable.

    python examples/triage/make_data.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

# (complaint, level, advice): the advice is the answer after "<level>: ".
ADULT = [
    ("crushing chest pain spreading to my left arm", "Emergency", "call an ambulance now."),
    ("sudden weakness on one side of my face", "Emergency", "call an ambulance now."),
    ("a fever of 39 degrees for three days", "Urgent", "see a doctor today."),
    ("burning when I pass urine", "Urgent", "see a doctor today."),
    ("a cut on my hand that will not stop bleeding", "Urgent", "go to the urgent care clinic."),
    ("a runny nose and a mild sore throat", "Self-care", "rest, drink fluids and check again in three days."),
    ("a stiff back after gardening", "Self-care", "keep moving gently and use a warm pack."),
    ("a prescription refill for my blood pressure tablets", "Routine", "book an appointment this week."),
    ("a mole that has changed shape", "Routine", "book an appointment this week."),
    ("trouble sleeping for a month", "Routine", "book an appointment this week."),
]
CHILD = [
    ("my baby is two months old and has a fever", "Emergency", "go to the emergency department now."),
    ("my son is struggling to breathe and his lips look blue", "Emergency", "call an ambulance now."),
    ("my daughter has had diarrhoea for two days and is not drinking", "Urgent", "see a doctor today."),
    ("my child has an earache and a temperature", "Urgent", "see a doctor today."),
    ("my toddler swallowed a button battery", "Emergency", "go to the emergency department now."),
    ("my child has a mild cough but is playing normally", "Self-care", "rest, drink fluids and check again in three days."),
    ("my son grazed his knee at school", "Self-care", "clean it with water and cover it."),
    ("my daughter is due for her vaccinations", "Routine", "book an appointment this week."),
    ("my child has been wetting the bed again", "Routine", "book an appointment this week."),
    ("my baby has a mild nappy rash", "Self-care", "keep the skin dry and use a barrier cream."),
]
OPENINGS = ["Hello, I have {c}.", "I need advice: {c}.", "Hi, {c}. What should I do?", "Quick question, {c}.",
            "Good morning. {C}.", "Please help, {c}.", "I am writing because of {c}.", "Is this serious? {C}."]


def message(rng: random.Random, table) -> tuple[str, str]:
    complaint, level, advice = rng.choice(table)
    prompt = rng.choice(OPENINGS).format(c=complaint, C=complaint[0].upper() + complaint[1:])
    return f"Triage this message: {prompt}", f"{level}: {advice}"


def rows(rng: random.Random, table, count: int, seen: set[str]) -> list[dict]:
    out = []
    while len(out) < count:
        prompt, response = message(rng, table)
        if prompt not in seen:  # every file holds different messages
            seen.add(prompt)
            out.append({"prompt": prompt, "response": response})
    return out


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def main() -> None:
    rng = random.Random(31)
    seen: set[str] = set()
    write_jsonl(HERE / "public.jsonl", rows(rng, ADULT + CHILD, 24, seen))
    write_jsonl(HERE / "eval.jsonl", rows(rng, ADULT + CHILD, 24, seen))
    for name, table in (("family", ADULT), ("children", CHILD)):
        write_jsonl(HERE / name / "eval.jsonl", rows(rng, table, 12, seen))
        write_jsonl(HERE / name / "private.jsonl", rows(rng, table, 40, seen))


if __name__ == "__main__":
    main()
