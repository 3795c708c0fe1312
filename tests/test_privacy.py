"""DP-SGD on a client's private rows (fedmkt.privacy): Opacus' per-row gradients through peft's LoRA layers
equal per-row autograd, the accountant's epsilon is Opacus' own for the same noise, rate and steps, and a
run reports what each client spent, stops at its budget and resumes spending exactly."""

import json

import pytest
import torch

from fedmkt.config import ConfigError, LoraSpec, ModelSpec, PrivacySpec, parse_config
from fedmkt.data.encoding import collate, encode_questions
from fedmkt.federation.local import LocalFederation
from fedmkt.federation.protocol import Phase, Request
from fedmkt.models import attach_lora, load_model
from fedmkt.privacy import PrivacyBudget, PrivacyError, PrivateGradients, poisson_batches, row_losses
from fedmkt.training import seeded
from tests.factories import crash_after_a_share_in_round_two
from tests.tiny import tiny_config


def _lora_model(dropout: float):
    loaded = load_model(ModelSpec(source="tiny:smollm2-135m-instruct"), seed=4)
    with seeded(1, torch.device("cpu")):
        model = attach_lora(loaded.model, LoraSpec(dropout=dropout))
    with torch.no_grad():  # B starts at zero; make it not, so that A's gradients are not zero too
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model, loaded.tokenizer


def _params(model):
    return [p for p in model.parameters() if p.requires_grad]


def _reference_step(model, batch, clip: float, expected_batch: int, seed: int) -> list[torch.Tensor]:
    """DP-SGD's noiseless gradient by hand: each row's own gradient by autograd from the same forward (so the
    same dropout masks), clipped to `clip`, summed, divided by the expected batch size."""
    params = _params(model)
    model.train()
    with seeded(seed, torch.device("cpu")):
        losses = row_losses(model, batch)
    rows = [torch.autograd.grad(loss, params, retain_graph=True) for loss in losses]
    total = [torch.zeros_like(p) for p in params]
    for grads in rows:
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for t, g in zip(total, grads):
            t += factor * g
    return [t / expected_batch for t in total], [float(torch.sqrt(sum((g ** 2).sum() for g in r))) for r in rows]


def _dp_step(model, chunks, clip: float, expected_batch: int, seed: int, noise: float = 0.0) -> list[torch.Tensor]:
    """The gradient fedmkt's DP-SGD step applies: plain SGD at learning rate 1 moves each parameter by it."""
    params = _params(model)
    before = [p.detach().clone() for p in params]
    private = PrivateGradients(model, torch.optim.SGD(params, lr=1.0), noise, clip, expected_batch)
    model.train()
    try:
        with seeded(seed, torch.device("cpu")):
            for batch in chunks:
                private.add(row_losses(private.module, batch))
            private.step()
    finally:
        private.close()
    moved = [b - p.detach() for b, p in zip(before, params)]
    with torch.no_grad():
        for p, b in zip(params, before):
            p.copy_(b)
    return moved


def test_a_noiseless_dp_step_is_the_clipped_mean_of_each_rows_own_gradient(mmlu):
    # Opacus issue 820 reports LoRA updates silently corrupted with peft >= 0.14: here with peft's LoRA and
    # dropout on, the step must be exactly the per-row clipped mean, and clipping must bite for some rows.
    model, tokenizer = _lora_model(dropout=0.1)
    examples = encode_questions(tokenizer, mmlu[:4], 96)
    batch = collate(examples, tokenizer.pad_token_id)
    _, norms = _reference_step(model, batch, clip=1e9, expected_batch=5, seed=9)
    clip = sorted(norms)[1] * 1.01  # the two largest rows are clipped, the others not
    expected, _ = _reference_step(model, batch, clip=clip, expected_batch=5, seed=9)
    got = _dp_step(model, [batch], clip=clip, expected_batch=5, seed=9)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-7)
    unclipped, _ = _reference_step(model, batch, clip=1e9, expected_batch=5, seed=9)
    assert max(float((u - e).abs().max()) for u, e in zip(unclipped, expected)) > 1e-4  # clipping changed it
    assert all("grad_sample" not in vars(p) for p in _params(model))  # Opacus' attributes are gone after


def test_a_poisson_batch_in_physical_batches_takes_the_same_step_and_an_empty_one_only_noise(mmlu):
    model, tokenizer = _lora_model(dropout=0.0)
    examples = encode_questions(tokenizer, mmlu[:4], 96)
    pad = tokenizer.pad_token_id
    whole = _dp_step(model, [collate(examples, pad)], clip=0.5, expected_batch=4, seed=2)
    split = _dp_step(model, [collate(examples[:2], pad), collate(examples[2:], pad)], clip=0.5, expected_batch=4,
                     seed=2)
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    empty = _dp_step(model, [], clip=0.5, expected_batch=4, seed=2, noise=2.0)
    spread = float(torch.cat([e.flatten() for e in empty]).std())
    assert spread == pytest.approx(2.0 * 0.5 / 4, rel=0.05)  # N(0, (sigma C)^2) / expected batch
    assert all(float(e.abs().sum()) == 0 for e in _dp_step(model, [], clip=0.5, expected_batch=4, seed=2))


def test_epsilon_is_opacus_own_for_the_same_noise_rate_and_steps():
    from opacus.accountants import PRVAccountant, RDPAccountant

    for accountant, library in (("rdp", RDPAccountant), ("prv", PRVAccountant)):
        budget = PrivacyBudget(PrivacySpec(noise_multiplier=1.1, accountant=accountant), rows=200,
                               expected_batch=8, epochs_per_call=1, calls=3)
        assert budget.sample_rate == 8 / 200 and budget.steps_per_call == 25
        budget.spend(40)
        own = library()
        own.history = [(1.1, 8 / 200, 40)]
        assert budget.epsilon() == pytest.approx(own.get_epsilon(delta=1 / 2000), rel=1e-9)
        assert budget.delta == 1 / 2000  # the default: 1 / (10 N)
    auto = PrivacyBudget(PrivacySpec(target_epsilon=2.0, delta=1e-4), rows=200, expected_batch=8, epochs_per_call=2,
                         calls=3)
    assert auto.epsilon_after(auto.planned_steps) <= 2.0
    assert auto.epsilon_after(auto.planned_steps) == pytest.approx(2.0, abs=0.02)  # the least noise that fits
    assert auto.allows(auto.planned_steps) and not auto.allows(auto.planned_steps + 60)
    with pytest.raises(PrivacyError, match="needs private rows to protect"):
        PrivacyBudget(PrivacySpec(target_epsilon=1.0), rows=0, expected_batch=8, epochs_per_call=1, calls=1)


def test_poisson_sampling_draws_each_row_independently():
    draws = poisson_batches(1000, 0.05, 200, seed=3)
    sizes = [len(d) for d in draws]
    assert sum(sizes) / len(sizes) == pytest.approx(50, rel=0.05) and len(set(sizes)) > 10  # not a fixed size
    assert poisson_batches(1000, 0.05, 3, seed=3) == draws[:3]


def test_privacy_settings_that_cannot_hold_are_refused_by_field():
    base = tiny_config("/tmp/unused")
    with pytest.raises(ConfigError, match="noise_multiplier 'auto' is computed from target_epsilon"):
        parse_config({**base, "privacy": {"max_grad_norm": 1.0}})
    with pytest.raises(ConfigError, match="method `centralized` trains on the clients' private rows at the server"):
        parse_config({**base, "privacy": {"target_epsilon": 4}, "fedmkt": {"method": "centralized"}})
    with pytest.raises(ConfigError, match="privacy.noise_multiplier"):
        parse_config({**base, "privacy": {"noise_multiplier": -1}})
    own = parse_config({**base, "privacy": {"target_epsilon": 8},
                        "clients": [{**base["clients"][0], "privacy": {"target_epsilon": 1}}, base["clients"][1]]})
    assert own.privacy_for("stem").target_epsilon == 1 and own.privacy_for("hum").target_epsilon == 8


def _dp_config(tmp_path, name, **privacy):
    config = tiny_config(tmp_path, name)
    config["data"]["private_size"] = 12
    config["privacy"] = privacy
    return parse_config(config)


def _rounds(run):
    return json.loads((run / "metrics.json").read_text())["rounds"]


def test_a_dp_run_reports_what_each_client_spent_and_a_crashed_round_spends_for_good(tmp_path, mmlu):
    whole = LocalFederation(_dp_config(tmp_path, "whole", target_epsilon=3.0), questions=mmlu).run()
    config = _dp_config(tmp_path, "crash", target_epsilon=3.0)
    crash_after_a_share_in_round_two(LocalFederation(config, questions=mmlu))  # stem trains and spends, then the
    # power goes
    resumed = LocalFederation(config, questions=mmlu, resume=True).run()
    a, b = _rounds(whole), _rounds(resumed)
    assert a[0]["privacy"]["stem"]["epsilon"] < a[1]["privacy"]["stem"]["epsilon"] <= 3.0
    assert a[1]["privacy"]["stem"]["epsilon"] == pytest.approx(3.0, abs=0.05)  # auto noise spends the budget
    assert {k: v for k, v in b[0].items() if k not in ("timing", "bytes")} == {  # (bytes: safetensors' metadata order)
        k: v for k, v in a[0].items() if k not in ("timing", "bytes")}
    # stem's crashed half-round trained and sent its knowledge: that spend stands, so the repeated round would
    # exceed the budget and stem trains no more on private rows; hum, which had not started, goes on as before.
    assert b[1]["privacy"]["stem"] == a[1]["privacy"]["stem"] | {"stopped": True}
    assert b[1]["privacy"]["hum"] == a[1]["privacy"]["hum"]
    assert all(loss is None for r in a for loss in r["private_loss"].values())  # a DP client sends no loss
    summary = (whole / "summary.md").read_text()
    assert "## privacy (DP-SGD" in summary and f"| stem | {1 / 120:.3g} |" in summary
    ledger = json.loads((whole / "privacy" / "stem.json").read_text())
    assert sum(steps for _, _, steps in ledger["history"]) == 2 * 4  # 12 rows, expected batch 3: 4 steps a round
    (resumed / "privacy" / "stem.json").write_text("{not json")
    runtime = LocalFederation(config, questions=mmlu, resume=True).runtimes["stem"]
    with pytest.raises(Exception, match="its privacy ledger .* is unreadable"):
        runtime.handle(Phase.SHARE, Request(3).to_wire())


def test_a_client_whose_next_round_would_exceed_its_target_stops_private_training(tmp_path, mmlu):
    probe = PrivacyBudget(PrivacySpec(noise_multiplier=1.0), rows=12, expected_batch=3, epochs_per_call=1, calls=2)
    one, two = probe.epsilon_after(4), probe.epsilon_after(8)
    run = LocalFederation(_dp_config(tmp_path, "stop", noise_multiplier=1.0, target_epsilon=(one + two) / 2),
                          questions=mmlu).run()
    first, second = (r["privacy"]["stem"] for r in _rounds(run))
    assert first == {"epsilon": pytest.approx(one), "delta": pytest.approx(1 / 120), "stopped": False}
    assert second == {"epsilon": pytest.approx(one), "delta": pytest.approx(1 / 120), "stopped": True}
    assert "stopped" in (run / "summary.md").read_text()
    assert "stem" in _rounds(run)[1]["kd_loss"]  # it still distilled from the server's public knowledge


def test_a_flower_node_sets_its_own_budget_which_the_servers_config_cannot_lift():
    from fedmkt.federation.flower_client import node_overrides

    config = parse_config(tiny_config("/tmp/unused"))
    assert node_overrides({"privacy-epsilon": "2.5"}, config, "stem")["privacy"].target_epsilon == 2.5
    looser = parse_config({**tiny_config("/tmp/unused"), "privacy": {"target_epsilon": 1.0, "max_grad_norm": 0.5}})
    kept = node_overrides({"privacy-epsilon": 8}, looser, "stem")["privacy"]
    assert kept.target_epsilon == 1.0 and kept.max_grad_norm == 0.5  # the smaller target stands
    for bad in ("many", "0", "-1", "nan"):
        with pytest.raises(ValueError, match="privacy-epsilon"):
            node_overrides({"privacy-epsilon": bad}, config, "stem")


def test_the_leakage_benchmarks_attack_figures_on_known_scores():
    import numpy as np

    from benchmarks.bench_privacy import auc, tpr_at, with_interval

    members, others = np.array([0.1, 0.2, 0.3]), np.array([0.4, 0.5, 0.6, 0.7])
    assert auc(members, others) == 1.0 and auc(others, members) == 0.0  # lower score: member
    assert auc(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.5  # ties count half
    rng = np.random.default_rng(0)
    same = rng.normal(size=2000)
    assert abs(auc(same[:1000], same[1000:]) - 0.5) < 0.03
    # At 1% FPR on 100 non-members one may score below the threshold: the member below all of them is caught.
    assert tpr_at(np.array([-1.0, 0.5, 2.0]), np.linspace(0, 1, 100)) == pytest.approx(1 / 3)
    figure = with_interval(auc, rng.normal(-1, 1, 300), rng.normal(0, 1, 300))
    assert figure["interval"][0] < figure["value"] < figure["interval"][1] and figure["value"] > 0.7
