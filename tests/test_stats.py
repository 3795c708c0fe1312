import numpy as np
import pytest

from fedmkt.stats import paired_difference


def test_equal_systems_differ_by_nothing_and_decide_nothing():
    scores = np.random.default_rng(0).integers(0, 2, size=50)
    d = paired_difference(scores, scores)
    assert (d.difference, d.low, d.high, d.n) == (0.0, 0.0, 0.0, 50) and not d.resolved


def test_a_clear_gain_is_resolved_and_a_coin_flip_is_not():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, size=300)
    better = np.where(rng.random(300) < 0.3, 1, a)  # turns ~15% of the questions from wrong to right
    d = paired_difference(a, better)
    assert d.resolved and 0.08 < d.difference < 0.22 and d.low > 0
    noise = paired_difference(a, rng.integers(0, 2, size=300))  # unrelated answers: no true difference
    assert not noise.resolved and noise.low < 0 < noise.high, noise


def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    covered = 0
    for trial in range(100):
        a = (rng.random(200) < 0.5).astype(float)
        b = np.where(rng.random(200) < 0.2, 1.0, a)  # true gain: 0.2 * P(a wrong) = 0.1
        d = paired_difference(a, b, resamples=2000, seed=trial)
        covered += d.low <= 0.1 <= d.high
    assert 88 <= covered <= 100


def test_pairing_demands_the_same_questions():
    with pytest.raises(ValueError, match="same questions"):
        paired_difference([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="at least one"):
        paired_difference([], [])


def test_equivalence_is_two_one_sided_tests_against_the_margin():
    from fedmkt.stats import paired_difference

    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, size=2000).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:10]] = 1.0  # +0.005: tiny, and measured on 2,000 questions
    d = paired_difference(a, b)
    assert d.low > 0 and d.verdict(0.02) == "higher"  # a difference can be real and small
    same = paired_difference(a, a.copy())
    assert same.verdict(0.02) == "equivalent within ±0.02" and same.verdict() == "within noise"
    few = paired_difference(a[:40], rng.integers(0, 2, size=40).astype(float))  # 40 unrelated answers
    assert few.low < 0 < few.high and few.verdict(0.02) == "inconclusive"
    assert few.low < few.low90 < few.high90 < few.high  # the 90% interval TOST reads lies inside the 95% one


def test_seeds_widen_the_interval_when_they_disagree():
    from fedmkt.stats import paired_difference, seeded_difference

    rng = np.random.default_rng(2)
    a = [rng.integers(0, 2, size=500).astype(float) for _ in range(3)]

    def shifted(scores, up):  # turn `up` wrong answers right (or right ones wrong when negative)
        out = scores.copy()
        pick = np.flatnonzero(scores == (0 if up > 0 else 1))[:abs(up)]
        out[pick] = 1.0 if up > 0 else 0.0
        return out

    agree = seeded_difference([(x, shifted(x, 50)) for x in a])
    assert agree.seeds == 3 and agree.n == 1500 and agree.low > 0 and abs(agree.difference - 0.1) < 1e-9
    disagree = [(a[0], shifted(a[0], 100)), (a[1], shifted(a[1], -100)), (a[2], a[2])]
    two_level = seeded_difference(disagree)
    pooled = paired_difference(np.concatenate([p[0] for p in disagree]), np.concatenate([p[1] for p in disagree]))
    assert abs(two_level.difference) < 1e-9 and two_level.low < 0 < two_level.high
    assert two_level.half_width > 2 * pooled.half_width  # the seeds' spread counts, not the questions' alone


def test_pairs_follow_question_ids_and_refuse_other_questions():
    import pytest

    from fedmkt.stats import QuestionMismatch, compare_scores

    ours = {"d": {"acc": 0.5, "n": 4, "per_question": [1.0, 1.0, 0.0, 0.0]}}
    base = {"d": {"acc": 0.5, "n": 4, "per_question": [0.0, 0.0, 1.0, 1.0]}}
    # The same answers, listed in another order: paired by id, nothing changed.
    same = compare_scores(ours, base, {"d": [1, 2, 3, 4]}, {"d": [3, 4, 1, 2]})[0]
    assert same.paired.difference == 0 and (same.paired.low, same.paired.high) == (0.0, 0.0)
    by_position = compare_scores(ours, base)[0]  # runs without ids: by position, which here differs everywhere
    assert by_position.paired.low < 0 < by_position.paired.high and by_position.paired.half_width > 0.2
    with pytest.raises(QuestionMismatch, match="d: different questions"):
        compare_scores(ours, base, {"d": [1, 2, 3, 4]}, {"d": [1, 2, 3, 5]})


def test_the_share_of_a_reference_gain_is_the_ratio_of_the_paired_gains():
    from fedmkt.stats import gain_share

    zero = np.zeros(400)
    reference = np.r_[np.ones(200), np.zeros(200)]  # +0.5 over zero-shot
    ours = np.r_[np.ones(100), np.zeros(300)]  # +0.25: half of it
    share, low, high = gain_share([(zero, ours, reference)])
    assert share == 0.5 and 0.4 < low < 0.5 < high < 0.6
    # Over seeds that disagree (a quarter and three quarters), the interval widens to cover both.
    more = np.r_[np.ones(150), np.zeros(250)]
    share, low, high = gain_share([(zero, ours, reference), (zero, more, reference)])
    assert share == 0.625 and low < 0.55 and high > 0.7
    # A reference that gained nothing has no share to recover: NaN, never a division by zero.
    assert all(np.isnan(v) for v in gain_share([(zero, ours, zero)]))
