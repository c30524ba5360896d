"""The agreement statistics of two score columns, and the bootstrap that gives each a 95% interval.

Each statistic is a well-kept library's: scipy.stats (Pearson, Spearman, Kendall tau-b, the
bootstrap), scikit-learn (weighted Cohen's kappa, the confusion matrix), `krippendorff` (alpha).
ICC(2,1) alone is computed here: no small, kept library has it (pingouin pulls in pandas and
more), and it is a few lines of two-way ANOVA (Shrout & Fleiss 1979).

Statistics on categories (kappa, exact and within-one agreement, the confusion matrix) use
scores rounded half up to whole points: a judge's mean of three samples, 4.33, counts as 4.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import scipy.stats

CONFIDENCE = 0.95
SCALE = (1, 2, 3, 4, 5)
PAIR_STATISTICS = ("pearson", "spearman", "kendall_tau_b", "kappa_quadratic", "krippendorff_alpha", "icc_2_1",
                   "exact_agreement", "within_one", "mean_offset")


def rounded(values: np.ndarray) -> np.ndarray:
    """Half up, as a reader rounds a score (numpy's round gives 4.5 -> 4)."""
    return np.floor(np.asarray(values, float) + 0.5).astype(int)


def labels_of(*columns: np.ndarray) -> List[int]:
    """The 1-5 scale, widened to any rounded score outside it (the scale is never silently clipped)."""
    seen = set(SCALE)
    for c in columns:
        seen.update(int(v) for v in np.unique(rounded(c)))
    return sorted(seen)


# -- one statistic each ------------------------------------------------------------------------
def pearson(x: np.ndarray, y: np.ndarray) -> float:
    return _quiet(lambda: scipy.stats.pearsonr(x, y).statistic)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return _quiet(lambda: scipy.stats.spearmanr(x, y).statistic)


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    return _quiet(lambda: scipy.stats.kendalltau(x, y, variant="b").statistic)


def kappa_quadratic(x: np.ndarray, y: np.ndarray, labels: Sequence[int]) -> float:
    """Cohen's kappa with quadratic weights on rounded scores."""
    from sklearn.metrics import cohen_kappa_score

    return _quiet(lambda: cohen_kappa_score(rounded(x), rounded(y), labels=list(labels), weights="quadratic"))


def krippendorff_alpha(reliability: np.ndarray, domain: Optional[Sequence[float]] = None) -> float:
    """Ordinal alpha; `reliability` is raters x units with NaN where a rater gave no value.

    `domain` fixes the ordered values, so resamples that miss a value still rank the rest alike.
    """
    import krippendorff

    domain = np.unique(reliability[np.isfinite(reliability)]) if domain is None else np.asarray(domain)
    if len(domain) < 2:
        return float("nan")  # every value the same: alpha is 0/0
    return _quiet(lambda: krippendorff.alpha(reliability_data=reliability, level_of_measurement="ordinal",
                                             value_domain=domain))


def icc_2_1(ratings: np.ndarray) -> float:
    """ICC(2,1): two-way random effects, absolute agreement, one rater; `ratings` is targets x raters.

    Shrout, P. E. & Fleiss, J. L. (1979), "Intraclass correlations: uses in assessing rater
    reliability", Psychological Bulletin 86(2), 420-428, Table 1 / eq. for ICC(2,1):
        (BMS - EMS) / (BMS + (k - 1) EMS + k (JMS - EMS) / n)
    with BMS the between-targets, JMS the between-raters and EMS the residual mean square.
    """
    y = np.asarray(ratings, float)
    n, k = y.shape
    if n < 2 or k < 2:
        return float("nan")
    grand = y.mean()
    targets, raters = y.mean(axis=1), y.mean(axis=0)
    bms = k * np.sum((targets - grand) ** 2) / (n - 1)
    jms = n * np.sum((raters - grand) ** 2) / (k - 1)
    ems = np.sum((y - targets[:, None] - raters[None, :] + grand) ** 2) / ((n - 1) * (k - 1))
    denominator = bms + (k - 1) * ems + k * (jms - ems) / n
    return float((bms - ems) / denominator) if denominator > 0 else float("nan")


def pair_statistics(x: np.ndarray, y: np.ndarray, labels: Sequence[int], domain: Sequence[float]) -> np.ndarray:
    """Every statistic of PAIR_STATISTICS, in that order, for paired scores x and y."""
    rx, ry = rounded(x), rounded(y)
    return np.array([
        pearson(x, y),
        spearman(x, y),
        kendall_tau_b(x, y),
        kappa_quadratic(x, y, labels),
        krippendorff_alpha(np.vstack([x, y]), domain),
        icc_2_1(np.column_stack([x, y])),
        float(np.mean(rx == ry)) if len(x) else float("nan"),
        float(np.mean(np.abs(rx - ry) <= 1)) if len(x) else float("nan"),
        float(np.mean(x - y)) if len(x) else float("nan"),
    ])


def confusion(x: np.ndarray, y: np.ndarray, labels: Sequence[int]) -> List[List[int]]:
    """Counts of rounded scores: row i = x scored labels[i], column j = y scored labels[j]."""
    from sklearn.metrics import confusion_matrix

    if not len(x):
        return [[0] * len(labels) for _ in labels]
    return confusion_matrix(rounded(x), rounded(y), labels=list(labels)).tolist()


def _quiet(compute: Callable[[], float]) -> float:
    """A statistic that is undefined here (constant input, too few rows) is NaN, not a warning or a crash."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(compute())
        except (ValueError, ZeroDivisionError, FloatingPointError):
            return float("nan")


# -- the bootstrap -----------------------------------------------------------------------------
@dataclass
class Interval:
    estimate: Optional[float]
    low: Optional[float]
    high: Optional[float]
    method: str  # "BCa", "percentile", "percentile (k of N resamples undefined)", or why there is none

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "method": self.method}

    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def units_of(rows: np.ndarray, groups: Optional[np.ndarray] = None) -> List[np.ndarray]:
    """What the bootstrap draws: each row alone, or all rows of one group (cluster) together."""
    if groups is None:
        return [np.array([r]) for r in rows]
    by_group: dict = {}
    for r in rows:
        by_group.setdefault(groups[r], []).append(r)
    return [np.array(members) for members in by_group.values()]


def rows_of(units: Sequence[np.ndarray], drawn: np.ndarray) -> np.ndarray:
    """The rows of a resample of units: every row of each drawn unit, as many times as it was drawn."""
    return np.concatenate([units[i] for i in drawn]) if len(drawn) else np.array([], int)


def rng_for(seed: int, key: str) -> np.random.Generator:
    """One generator per comparison, from --seed and the comparison's name: the numbers of one pair
    do not change when other sources are added."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(key.encode())]))


def bootstrap(statistic: Callable[[np.ndarray], np.ndarray], units: Sequence[np.ndarray], resamples: int,
              rng: np.random.Generator) -> List[Interval]:
    """A 95% interval for each value `statistic(rows)` returns, from one paired bootstrap.

    scipy.stats.bootstrap resamples observations, not clusters, and a question with four answers
    is one cluster: resampling its rows apart would make the interval too narrow. So scipy is
    given the unit ids (a row, or a group's rows) as its data and the statistic expands each
    resample into the rows of the drawn units (`rows_of`). Every value comes from the same
    resamples (paired), and BCa's jackknife leaves out a whole unit. Where BCa gives no interval
    (a statistic constant or undefined on some resamples) the percentile interval of the same
    resamples is used, and `method` says so.
    """
    units = list(units)
    estimate = np.atleast_1d(np.asarray(statistic(rows_of(units, np.arange(len(units)))), float))
    if len(units) < 3:
        return [Interval(_num(e), None, None, "none: fewer than 3 rows or groups") for e in estimate]
    sizes_one = all(len(u) == 1 for u in units)
    flat = np.concatenate(units)

    def over_units(drawn: np.ndarray) -> np.ndarray:
        return np.atleast_1d(statistic(flat[drawn] if sizes_one else rows_of(units, drawn)))

    data = (np.arange(len(units)),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = scipy.stats.bootstrap(data, over_units, n_resamples=resamples, confidence_level=CONFIDENCE,
                                    method="BCa", vectorized=False, rng=rng)
        bca = [np.atleast_1d(v) for v in res.confidence_interval]
        pct = [np.atleast_1d(v) for v in scipy.stats.bootstrap(
            data, over_units, n_resamples=0, bootstrap_result=res, confidence_level=CONFIDENCE,
            method="percentile", vectorized=False, rng=rng).confidence_interval]
    distribution = np.atleast_2d(res.bootstrap_distribution)
    out = []
    for j, e in enumerate(estimate):
        if not np.isfinite(e):
            out.append(Interval(None, None, None, "none: undefined on these rows"))
        elif np.isfinite(bca[0][j]) and np.isfinite(bca[1][j]):
            out.append(Interval(float(e), float(bca[0][j]), float(bca[1][j]), "BCa"))
        elif np.isfinite(pct[0][j]) and np.isfinite(pct[1][j]):
            out.append(Interval(float(e), float(pct[0][j]), float(pct[1][j]), "percentile"))
        else:
            out.append(_defined_percentile(float(e), distribution[j]))
    return out


def _defined_percentile(estimate: float, distribution: np.ndarray) -> Interval:
    """Percentile interval over the resamples where the statistic is defined, if most of them are."""
    defined = distribution[np.isfinite(distribution)]
    undefined = len(distribution) - len(defined)
    if len(defined) < 0.9 * len(distribution):
        return Interval(estimate, None, None, f"none: undefined on {undefined} of {len(distribution)} resamples")
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(defined, [alpha, 1 - alpha])
    return Interval(estimate, float(low), float(high),
                    f"percentile ({undefined} of {len(distribution)} resamples undefined, left out)")


def _num(value: float) -> Optional[float]:
    return float(value) if np.isfinite(value) else None
