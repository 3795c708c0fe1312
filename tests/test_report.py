"""The grid report's claims compare matched cells only."""

from fedmkt.config import parse_config
from fedmkt.records import PartyScores, RoundRecord, RunMetrics, SplitSizes, Timing
from fedmkt.report import GridCell, claims_markdown

SMOL = {"source": "smollm2-135m-instruct"}
PRUNED = {"source": "gemma3-270m", "keep_layers": 9}


def scores(value: float) -> PartyScores:
    return PartyScores({"stem": {"acc": value, "n": 20}}, {"acc": value, "score": value})


def cell(name: str, clients: dict[str, dict], results: dict[str, float], **fedmkt) -> GridCell:
    config = parse_config({"clients": [{"name": n, "model": m, "domains": ["stem"]} for n, m in clients.items()],
                           "fedmkt": fedmkt}).model_dump(mode="json")
    metrics = RunMetrics(config=config, split=SplitSizes(48, {}, {"stem": 20}),
                         zero_shot={"server": scores(0.25), **{n: scores(0.25) for n in clients}},
                         rounds=[RoundRecord(round=1, evaluation={n: scores(v) for n, v in results.items()})])
    return GridCell(name, "", metrics)


def test_claims_pair_each_client_with_its_own_standalone_and_the_llm_with_its_own_pooling():
    two = {"stem": SMOL, "social": SMOL}
    hetero = {"stem": SMOL, "social": PRUNED}
    cells = [
        cell("homogeneous", two, {"server": 0.5, "stem": 0.41, "social": 0.42}),
        cell("heterogeneous", hetero, {"server": 0.5, "stem": 0.43, "social": 0.44}),
        cell("one-to-one", {"stem": SMOL}, {"server": 0.5, "stem": 0.45}),
        cell("llm2slm", two, {"stem": 0.46, "social": 0.47}, llm_training=False),
        cell("standalone-smol", two, {"stem": 0.31, "social": 0.32}, method="standalone"),
        cell("standalone-pruned", hetero, {"stem": 0.33, "social": 0.34}, method="standalone"),
        cell("centralized-both", two, {"server": 0.6}, method="centralized"),
        cell("centralized-stem", {"stem": SMOL}, {"server": 0.7}, method="centralized"),
    ]
    rows = [line for line in claims_markdown(cells) if line.startswith("| ") and "claim" not in line[:8]]
    pairs = {(r.split(" | ")[0][2:], r.split(" | ")[1]): r.split(" | ")[4] for r in rows}
    # The pruned client meets the pruned standalone, the SmolLM2 one the SmolLM2 standalone (the first
    # standalone cell, which an unmatched pairing would have taken for both).
    assert pairs[("FedMKT: SLM social beats standalone", "heterogeneous")] == "0.340 (standalone-pruned)"
    assert pairs[("FedMKT: SLM social beats standalone", "homogeneous")] == "0.320 (standalone-smol)"
    # One client of a two-client grid: its standalone twin is the same client in either standalone cell.
    assert pairs[("FedMKT: SLM stem beats standalone", "one-to-one")] in ("0.310 (standalone-smol)",
                                                                          "0.330 (standalone-pruned)")
    # The LLM against the centralized cell that pools exactly its own clients' data.
    assert pairs[("FedMKT: LLM matches centralized", "homogeneous")] == "0.600 (centralized-both)"
    assert pairs[("FedMKT: LLM matches centralized", "one-to-one")] == "0.700 (centralized-stem)"
    # A centralized LLM sees the clients' data, never their models: the heterogeneous cell's clients hold the
    # same data as the homogeneous cell's, so both LLMs meet the same pooling.
    assert pairs[("FedMKT: LLM matches centralized", "heterogeneous")] == "0.600 (centralized-both)"
    # LLM2SLM claims are its own, and it makes none about the LLM it keeps frozen.
    assert ("LLM2SLM: SLM stem beats standalone", "llm2slm") in pairs
    assert not any(claim.startswith("FedMKT") and where == "llm2slm" for claim, where in pairs)
    assert not any("LLM beats" in claim and where == "llm2slm" for claim, where in pairs)
    # Every SLM against its own zero-shot; FedMKT's SLMs against LLM2SLM on the same clients and server (the
    # one-to-one and heterogeneous cells have no such twin), verdicts saying which way it went.
    assert pairs[("FedMKT: SLM social beats its zero-shot", "heterogeneous")] == "0.250 (round 0)"
    assert pairs[("FedMKT: SLM stem against LLM2SLM", "homogeneous")] == "0.460 (llm2slm)"
    assert ("FedMKT: SLM stem against LLM2SLM", "one-to-one") not in pairs
    assert ("FedMKT: SLM social against LLM2SLM", "heterogeneous") not in pairs
    assert not any("against FedAvg" in claim for claim, _ in pairs)  # no FedAvg cell in this grid


def per_question(values: list[float], free_text: list[float] | None = None) -> PartyScores:
    domains = {"stem": {"acc": sum(values) / len(values), "n": len(values), "per_question": values}}
    if free_text:
        domains["summaries"] = {"rougeL": sum(free_text) / len(free_text), "n": len(free_text),
                                "per_question": free_text}
    mean = {"acc": domains["stem"]["acc"], "score": domains["stem"]["acc"]}
    if free_text:
        mean["rougeL"] = domains["summaries"]["rougeL"]
    return PartyScores(domains, mean)


def test_every_claim_carries_its_paired_interval_and_a_verdict_from_it():
    """The same 200 questions: a client that turns 30 wrong answers right beats its standalone (the interval
    excludes 0); the LLM, which changes 4 answers each way, is within noise of its zero-shot; free-text
    results are judged apart from accuracies."""
    import numpy as np

    base = np.random.default_rng(0).integers(0, 2, size=200).astype(float)
    wrong = np.flatnonzero(base == 0)
    right = np.flatnonzero(base == 1)
    better = base.copy()
    better[wrong[:30]] = 1.0
    shuffled = base.copy()
    shuffled[wrong[:4]], shuffled[right[:4]] = 1.0, 0.0
    rouge = [0.2, 0.4, 0.3, 0.5]
    ours = cell("fed", {"stem": SMOL}, {})
    ours.metrics.zero_shot["server"] = per_question(list(base), rouge)
    ours.metrics.rounds[0].evaluation = {"server": per_question(list(shuffled), [0.3, 0.5, 0.4, 0.6]),
                                         "stem": per_question(list(better))}
    alone = cell("alone", {"stem": SMOL}, {}, method="standalone")
    alone.metrics.rounds[0].evaluation = {"stem": per_question(list(base))}
    rows = {tuple(r.split(" | ")[:3]): r for r in claims_markdown([ours, alone]) if r.startswith("| FedMKT")}
    slm = rows[("| FedMKT: SLM stem beats standalone", "fed", "accuracy (n=200)")]
    assert "+0.150 [+0.1" in slm and slm.endswith("| higher |")
    llm = rows[("| FedMKT: LLM beats its zero-shot", "fed", "accuracy (n=200)")]
    assert "+0.000 [-0.0" in llm and "within noise" in llm
    rouge_row = rows[("| FedMKT: LLM beats its zero-shot", "fed", "ROUGE-L (n=4)")]
    assert "+0.100 [+0.100, +0.100]" in rouge_row and rouge_row.endswith("| higher |")


def test_a_run_summary_shows_each_party_against_its_zero_shot_with_the_interval():
    from fedmkt.summary import summary_markdown

    zero = [0.0] * 50 + [1.0] * 50
    after = [1.0] * 100  # every wrong answer turned right: +0.5, interval well clear of 0
    run = cell("run", {"stem": SMOL}, {})
    run.metrics.zero_shot = {"server": per_question(zero, [0.5, 0.5]), "stem": per_question(zero, [0.1, 0.3])}
    run.metrics.rounds[0].evaluation = {"server": per_question(zero, [0.5, 0.5]), "stem": per_question(after, [0.1, 0.3])}
    run.metrics.rounds[0].timing = Timing(1.0, 1.0, 1.0)
    run.metrics.majority = per_question([1.0] * 40 + [0.0] * 60)  # no free-text domain: no ROUGE-L figure
    text = summary_markdown(run.metrics)
    assert "| majority class (public labels) | 0.400 | - | 0.400 | - |" in text
    assert "| stem | accuracy (n=100) | 0.500 | 1.000 | +0.500 [+0.400, +0.600] | higher |" in text
    assert "| server | accuracy (n=100) | 0.500 | 0.500 | +0.000 [+0.000, +0.000] | within noise |" in text
    assert "| server | ROUGE-L (n=2) |" in text
    assert "mean accuracy | mean ROUGE-L |" in text  # one mean per kind, never averaged together


def test_plots_show_intervals_and_the_baseline_cells_as_reference_lines(tmp_path):
    from fedmkt.plots import plot_scores
    from fedmkt.report import _baseline_lines
    from fedmkt.stats import kind_scores

    two = {"stem": SMOL, "social": SMOL}
    cells = [cell("homogeneous", two, {"server": 0.5, "stem": 0.41, "social": 0.42}),
             cell("standalone", two, {"stem": 0.31, "social": 0.32}, method="standalone"),
             cell("centralized", two, {"server": 0.6}, method="centralized")]
    lines = _baseline_lines(cells)
    assert lines == {"acc": {"Standalone stem": 0.31, "Standalone social": 0.32, "Centralized server": 0.6}}
    # A party's accuracy with its bootstrap interval over the questions; none without per-question scores.
    mean, (low, high) = kind_scores(per_question([1.0, 0.0, 1.0, 1.0] * 25).domains, "acc")
    assert mean == 0.75 and 0.6 < low < 0.75 < high < 0.9
    assert kind_scores(scores(0.4).domains, "acc") == (0.4, None)
    path = plot_scores(cells[0].metrics, tmp_path / "scores.png", "homogeneous", lines)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_committed_grid_report_is_what_the_committed_runs_give(tmp_path):
    """docs/paper-grid/report.md is rewritten byte for byte from the cells' metrics.json kept beside it (the
    report is never edited by hand, and a change to the report code shows up here)."""
    from pathlib import Path

    from fedmkt.report import write_grid_report

    shipped = Path(__file__).resolve().parents[1] / "docs" / "paper-grid"
    written = write_grid_report(shipped, output=tmp_path)
    assert written.read_text() == (shipped / "report.md").read_text()
    claims = [line for line in written.read_text().splitlines() if line.startswith("| ") and (": SLM " in line
              or ": LLM " in line)]
    assert claims and all(" [" in line and line.endswith(("higher |", "lower |", "within noise |"))
                          for line in claims)  # every claim carries its interval and a verdict


def test_cells_scored_on_other_questions_are_refused_by_name():
    import pytest

    from fedmkt.report import ReportError

    ours = cell("fed", {"stem": SMOL}, {"stem": 0.5})
    alone = cell("alone", {"stem": SMOL}, {"stem": 0.5}, method="standalone")
    for c, ids in ((ours, [1, 2]), (alone, [1, 3])):
        c.metrics.question_ids = {"stem": ids}
        for evaluation in (c.metrics.zero_shot, c.metrics.rounds[0].evaluation):
            for scores_ in evaluation.values():
                scores_.domains["stem"]["per_question"] = [1.0, 0.0]
    with pytest.raises(ReportError, match="cells fed and alone were scored on different questions"):
        claims_markdown([ours, alone])


def test_the_majority_class_answers_the_public_sets_commonest_label_of_each_domain():
    from fedmkt.data.questions import Question
    from fedmkt.evaluation import majority_class

    def q(uid, domain, answer):
        return Question(uid=uid, domain=domain, subject=domain, question="?", choices=("neg", "pos"), answer=answer)

    public = [q(1, "a", 1), q(2, "a", 1), q(3, "a", 0), q(4, "b", 0)]
    evaluation = {"a": [q(10, "a", 1), q(11, "a", 0)], "b": [q(12, "b", 0), q(13, "b", 0), q(14, "b", 1)],
                  "c": [q(15, "c", 1)]}  # no public question of c: the whole public set's commonest (pos)
    scores_ = majority_class(public, evaluation)
    assert {d: r["per_question"] for d, r in scores_.domains.items()} == {"a": [1.0, 0.0], "b": [1.0, 1.0, 0.0],
                                                                        "c": [1.0]}


def test_free_text_domains_get_the_most_typical_public_reference_as_their_constant_answer():
    from fedmkt.data.questions import Question
    from fedmkt.evaluation import majority_class, rouge_l
    from fedmkt.summary import _majority_row

    def q(uid, domain, reference):
        return Question(uid=uid, domain=domain, subject=domain, question="?", references=(reference,))

    # "the cat sat" shares two words with each other reference: the highest mean ROUGE-L, so the answer.
    public = [q(1, "t", "the cat sat"), q(2, "t", "the dog sat down"), q(3, "t", "a cat ran"), q(4, "u", "alone")]
    evaluation = {"t": [q(10, "t", "the cat sat on the mat"), q(11, "t", "birds fly")],
                  "u": [q(12, "u", "alone")]}  # one public reference: nothing to compare it with, no answer
    scores_ = majority_class(public, evaluation)
    assert list(scores_.domains) == ["t"]
    assert scores_.domains["t"]["per_question"] == [rouge_l("the cat sat", "the cat sat on the mat"), 0.0]
    assert abs(scores_.domains["t"]["rougeL"] - rouge_l("the cat sat", "the cat sat on the mat") / 2) < 1e-12
    assert _majority_row(scores_, ["t", "u"], ["rougeL"]).startswith("| constant answer (public labels) | 0.333 | - |")
