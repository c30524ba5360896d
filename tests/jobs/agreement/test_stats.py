"""Each statistic against an independent computation on fixed arrays; the bootstrap's coverage on
data with a known correlation; the cluster bootstrap draws whole groups."""

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.agreement import stats
from jobs.agreement.stats import (PAIR_STATISTICS, bootstrap, icc_2_1, kappa_quadratic, kendall_tau_b,
                                  krippendorff_alpha, pair_statistics, pearson, rng_for, rounded, rows_of, spearman,
                                  units_of)

X = np.array([1, 2, 2, 3, 4, 4, 5, 3, 1, 5.])
Y = np.array([2, 2, 3, 3, 3, 5, 5, 4, 1, 4.])


def test_pearson_matches_numpy():
    assert pearson(X, Y) == pytest.approx(np.corrcoef(X, Y)[0, 1], abs=1e-12)


def test_spearman_is_pearson_of_average_ranks():
    def ranks(v):  # average ranks for ties, by hand
        order = {value: np.mean([i + 1 for i, w in enumerate(sorted(v)) if w == value]) for value in set(v)}
        return np.array([order[value] for value in v])

    assert spearman(X, Y) == pytest.approx(np.corrcoef(ranks(X), ranks(Y))[0, 1], abs=1e-12)


def test_kendall_tau_b_matches_pair_counting():
    concordant = discordant = ties_x = ties_y = 0
    for i, j in combinations(range(len(X)), 2):
        dx, dy = np.sign(X[i] - X[j]), np.sign(Y[i] - Y[j])
        if dx == 0 and dy == 0:
            continue  # tied in both: counts in neither denominator term below
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    # tau-b = (C - D) / sqrt((C + D + T_x) (C + D + T_y)), T = pairs tied only in that variable
    expected = (concordant - discordant) / np.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    assert kendall_tau_b(X, Y) == pytest.approx(expected, abs=1e-12)


def test_quadratic_kappa_on_a_hand_computed_3x3_table():
    # Observed (rows x, columns y): [[2,1,0],[0,2,1],[1,0,3]]; marginals 3,3,4 both ways, n = 10.
    # Disagreement weights (i-j)^2: observed sum 1 + 1 + 4 = 6; expected sum
    # (9 + 9 + 4*12 + 4*12 + 12 + 12) / 10 = 13.8; kappa = 1 - 6/13.8 = 13/23.
    x = np.array([1, 1, 1, 2, 2, 2, 3, 3, 3, 3.])
    y = np.array([1, 1, 2, 2, 2, 3, 3, 3, 3, 1.])
    assert kappa_quadratic(x, y, [1, 2, 3, 4, 5]) == pytest.approx(13 / 23, abs=1e-12)
    assert stats.confusion(x, y, [1, 2, 3]) == [[2, 1, 0], [0, 2, 1], [1, 0, 3]]


def test_krippendorff_ordinal_alpha_on_krippendorffs_textbook_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers x 12 units
    # with missing values; ordinal alpha = 0.815.
    nan = np.nan
    data = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
                     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
                     [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
                     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]])
    assert krippendorff_alpha(data) == pytest.approx(0.815, abs=5e-4)
    assert np.isnan(krippendorff_alpha(np.array([[3, 3, 3], [3, 3, 3.]])))  # one value: undefined, not a crash


SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7.]])


def test_icc_2_1_on_shrout_and_fleiss_table_2():
    # Shrout & Fleiss (1979), Table 2 (6 targets x 4 judges); their Table 4 gives ICC(2,1) = .29.
    assert icc_2_1(SHROUT_FLEISS) == pytest.approx(0.29, abs=0.005)


def test_icc_2_1_of_two_raters_matches_its_closed_form():
    # For k = 2 the mean squares reduce to ICC(2,1) = 2 s_xy / (s_x^2 + s_y^2 + dbar^2 - s_d^2 / n)
    # (sample variances, d = x - y): computed here without any ANOVA.
    x, y = SHROUT_FLEISS[:, 0], SHROUT_FLEISS[:, 1]
    n, d = len(x), x - y
    expected = 2 * np.cov(x, y)[0, 1] / (x.var(ddof=1) + y.var(ddof=1) + d.mean() ** 2 - d.var(ddof=1) / n)
    assert icc_2_1(np.column_stack([x, y])) == pytest.approx(expected, abs=1e-12)
    assert icc_2_1(np.column_stack([x, x])) == pytest.approx(1.0)
    assert icc_2_1(np.column_stack([x, x + 2])) < 1  # absolute agreement: an offset costs


def test_pair_statistics_counts_and_offset():
    x = np.array([1, 2, 3, 4.333, 4.5])
    y = np.array([1, 3, 5, 4, 4])
    assert list(rounded(x)) == [1, 2, 3, 4, 5]  # half up, not to even
    values = dict(zip(PAIR_STATISTICS, pair_statistics(x, y, [1, 2, 3, 4, 5], np.unique(np.r_[x, y]))))
    assert values["exact_agreement"] == pytest.approx(2 / 5)  # rows 1 and 4
    assert values["within_one"] == pytest.approx(4 / 5)  # all but 3 vs 5
    assert values["mean_offset"] == pytest.approx(np.mean(x - y))


def test_the_bootstrap_interval_covers_a_known_correlation():
    """100 samples of n = 60 from a bivariate normal with rho = 0.6: the 95% BCa interval of
    Pearson's r should hold 0.6 about 95 times (binomial spread: 0.88-0.99 is generous)."""
    rho, n, trials = 0.6, 60, 100
    rng = np.random.default_rng(7)
    cov = [[1, rho], [rho, 1]]
    covered, methods = 0, set()
    units = units_of(np.arange(n))
    for t in range(trials):
        xy = rng.multivariate_normal([0, 0], cov, size=n)
        x, y = xy[:, 0], xy[:, 1]
        (r,) = bootstrap(lambda rows: np.corrcoef(x[rows], y[rows])[0, 1], units, 400, np.random.default_rng(t))
        covered += r.low <= rho <= r.high
        methods.add(r.method)
    assert 0.88 <= covered / trials <= 0.99, covered
    assert methods == {"BCa"}


def test_the_bootstrap_is_deterministic_and_falls_back_to_percentile():
    x = np.arange(30.)
    units = units_of(np.arange(30))
    one = bootstrap(lambda r: np.array([x[r].mean(), 1.0]), units, 50, rng_for(0, "k"))
    two = bootstrap(lambda r: np.array([x[r].mean(), 1.0]), units, 50, rng_for(0, "k"))
    assert one == two
    assert one[0].method == "BCa"
    # A constant statistic has no BCa interval (its jackknife is flat): the percentile one is used.
    assert (one[1].method, one[1].low, one[1].high) == ("percentile", 1.0, 1.0)
    few = bootstrap(lambda r: x[r].mean(), units[:2], 50, rng_for(0, "k"))
    assert few[0].low is None and "fewer than 3" in few[0].method


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=4, max_size=30), st.integers(0, 2**16))
def test_the_cluster_bootstrap_resamples_whole_groups(labels, seed):
    groups = np.array([f"g{v}" for v in labels], dtype=object)
    members = {g: sorted(np.flatnonzero(groups == g)) for g in set(groups)}
    units = units_of(np.arange(len(groups)), groups)
    assert sorted(len(u) for u in units) == sorted(len(m) for m in members.values())
    seen = []

    def statistic(rows):
        seen.append(np.array(rows))
        return float(len(rows))

    if len(units) >= 3:
        bootstrap(statistic, units, 20, np.random.default_rng(seed))
    else:  # too few groups for an interval: check the expansion alone
        seen.append(rows_of(units, np.random.default_rng(seed).integers(0, len(units), 5)))
    for rows in seen:  # every resample (and jackknife sample) is a union of whole groups
        counts = {int(r): int(c) for r, c in zip(*np.unique(rows, return_counts=True))}
        for g, rows_of_g in members.items():
            drawn = {counts.get(int(r), 0) for r in rows_of_g}
            assert len(drawn) == 1, f"group {g} split in a resample: {drawn}"
