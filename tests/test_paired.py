"""Per-image paired tests: DeLong (fast against the definition), exact McNemar, Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from covidxr.reporting.paired import delong, holm, mcnemar, over_seeds, verdict


def delong_by_definition(targets, a, b) -> tuple[float, float]:
    """AUROC difference and its DeLong variance, O(n*m) from the structural components."""
    positive = np.asarray(targets, bool)
    parts = []
    for scores in (a, b):
        x, y = scores[positive][:, None], scores[~positive][None, :]
        psi = (x > y) + 0.5 * (x == y)
        parts.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    m, n = int(positive.sum()), int((~positive).sum())
    s10 = np.cov(np.stack([parts[0][1], parts[1][1]]))
    s01 = np.cov(np.stack([parts[0][2], parts[1][2]]))
    cov = s10 / m + s01 / n
    return parts[0][0] - parts[1][0], cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_fast_delong_equals_the_definition(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    targets = rng.random(n) < rng.uniform(0.2, 0.8)
    a = targets * rng.uniform(0, 2) + rng.normal(size=n)
    b = 0.5 * a + targets * rng.uniform(0, 1) + rng.normal(size=n)
    if ties:
        a, b = np.round(a, 0), np.round(b * 2, 0) / 2
    difference, variance = delong_by_definition(targets, a, b)
    result = delong(targets, a, b)
    assert result.difference == pytest.approx(difference, abs=1e-9)
    z = difference / math.sqrt(variance)
    assert result.p_value == pytest.approx(2 * scipy.stats.norm.sf(abs(z)), abs=1e-9)
    half = 1.959963984540054 * math.sqrt(variance)
    assert result.ci_low == pytest.approx(difference - half, abs=1e-9)


def test_identical_models_are_indistinguishable_with_p_one() -> None:
    rng = np.random.default_rng(0)
    targets = rng.random(50) < 0.5
    scores = rng.random(50)
    probs_correct = rng.random(50) < 0.8
    assert delong(targets, scores, scores).p_value == 1.0
    assert mcnemar(probs_correct, probs_correct).p_value == 1.0
    assert verdict(0.0, 1.0) == "indistinguishable (p_holm >= 0.05)"


def test_a_clearly_better_model_is_told_apart() -> None:
    rng = np.random.default_rng(1)
    targets = rng.random(200) < 0.5
    good, noise = targets + 0.3 * rng.normal(size=200), rng.normal(size=200)
    result = delong(targets, good, noise)
    assert result.difference > 0.3 and result.p_value < 1e-6 and result.ci_low > 0
    assert verdict(result.difference, result.p_value) == "better"
    assert verdict(-result.difference, result.p_value) == "worse"


@pytest.mark.parametrize("seed", range(4))
def test_exact_mcnemar_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.random(60) < 0.8, rng.random(60) < 0.65
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    result = mcnemar(a, b)
    assert result.p_value == pytest.approx(sm_mcnemar(table, exact=True).pvalue, abs=1e-12)
    assert result.difference == pytest.approx(a.mean() - b.mean())


@pytest.mark.parametrize("seed", range(5))
def test_holm_equals_statsmodels(seed: int) -> None:
    p = np.random.default_rng(seed).random(int(seed) + 2) ** 3
    expected = multipletests(p, method="holm")[1]
    assert holm(list(p)) == pytest.approx(list(expected), abs=1e-12)
    assert math.isnan(holm([0.01, math.nan, 0.02])[1])


def test_seeds_combine_by_a_paired_t_interval() -> None:
    combined = over_seeds([0.02, 0.03, 0.04])
    assert combined.difference == pytest.approx(0.03)
    assert combined.ci_low > 0 and combined.p_value < 0.05
    assert math.isnan(over_seeds([0.02]).p_value)


def test_folds_keep_groups_share_the_test_split_and_cover_the_pool(phantoms) -> None:
    from collections import Counter

    from covidxr.data.splitting.index import build_index
    from covidxr.data.splitting.spec import SplitSpec

    base = dict(classes=["COVID", "Normal"], seed=3, dedup="group")
    plain = build_index(phantoms, SplitSpec(**base))
    pool = {s.path for s in plain.splits["train"] + plain.splits["val"]}
    vals, tests = [], []
    for fold in range(3):
        index = build_index(phantoms, SplitSpec(**base, folds=3, fold=fold))
        tests.append([s.path for s in index.splits["test"]])
        vals.append({s.path for s in index.splits["val"]})
        train = {s.path for s in index.splits["train"]}
        assert not train & vals[-1] and train | vals[-1] == pool
        groups_val = {s.group_key for s in index.splits["val"]}
        assert not groups_val & {s.group_key for s in index.splits["train"]}
        per_class = Counter(s.label for s in index.splits["val"])
        assert per_class[0] >= 4 and per_class[1] >= 4  # stratified: each class in each fold
    assert tests[0] == tests[1] == tests[2] == [s.path for s in plain.splits["test"]]
    assert set.union(*vals) == pool and sum(map(len, vals)) == len(pool)


def test_corrected_interval_is_wider_than_the_naive_one() -> None:
    from covidxr.reporting.intervals import t_interval
    from covidxr.reporting.summary import corrected_interval

    values = [80.0, 84.0, 82.0, 85.0, 79.0]
    mean, low, high = corrected_interval(values, test_size=20, train_size=80)
    naive = t_interval(values)
    assert mean == pytest.approx(82.0) and low < naive[1] and high > naive[2]
    factor = math.sqrt((1 / 5 + 20 / 80) / (1 / 5))
    assert (high - mean) == pytest.approx((naive[2] - mean) * factor)


def test_ensemble_members_from_folders_and_top_k(tmp_path) -> None:
    import json

    from covidxr.reporting.ensemble import ensemble_members
    from covidxr.utils.errors import ConfigError

    for job, acc in (("0", 0.7), ("1", 0.9), ("2", 0.8)):
        (tmp_path / job / "checkpoints").mkdir(parents=True)
        (tmp_path / job / "checkpoints" / "best.ckpt").write_bytes(b"x")
        (tmp_path / job / "metrics.json").write_text(json.dumps({"val/acc": acc}))
    assert [p.parent.parent.name for p in ensemble_members([tmp_path])] == ["0", "1", "2"]
    assert [p.parent.parent.name for p in ensemble_members([tmp_path], top_k=2)] == ["1", "2"]
    with pytest.raises(ConfigError, match="needs two or more"):
        ensemble_members([tmp_path], top_k=1)


def test_delong_without_estimated_variance_shows_nothing() -> None:
    """Four images where DeLong's variance is zero: no z, no interval, p = 1 (not p = 0 and a
    'better' verdict, as before)."""
    targets = np.array([1, 1, 0, 0])
    perfect, inverted = np.array([0.9, 0.9, 0.1, 0.1]), np.array([0.1, 0.1, 0.9, 0.9])
    result = delong(targets, perfect, inverted)
    assert result.difference == 1.0
    assert result.p_value == 1.0
    assert math.isnan(result.ci_low) and math.isnan(result.ci_high)
    assert verdict(result.difference, result.p_value).startswith("indistinguishable")
