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
