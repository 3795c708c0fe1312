"""The grid report's claims compare matched cells only."""

from fedmkt.config import parse_config
from fedmkt.records import PartyScores, RoundRecord, RunMetrics, SplitSizes
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
    rows = [line for line in claims_markdown(cells, 60) if line.startswith("| ") and "claim" not in line[:8]]
    pairs = {(r.split(" | ")[0][2:], r.split(" | ")[1]): r.split(" | ")[3] for r in rows}
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
    assert ("FedMKT: LLM matches centralized", "heterogeneous") not in pairs  # no pooling of those clients
    # LLM2SLM claims are its own, and it makes none about the LLM it keeps frozen.
    assert ("LLM2SLM: SLM stem beats standalone", "llm2slm") in pairs
    assert not any(claim.startswith("FedMKT") and where == "llm2slm" for claim, where in pairs)
    assert not any("LLM beats" in claim and where == "llm2slm" for claim, where in pairs)
