"""Statistics over seeds: mean, sample standard deviation, Student-t intervals, paired differences.

Pure Python (no scipy): the Student-t quantile comes from its CDF, written with the regularised
incomplete beta function (Lentz's continued fraction, as in Numerical Recipes 6.4), inverted by
bisection to full double precision. The report's seed-aggregated rows and the methods benchmark
both use :func:`summarise` and :func:`compute_paired_differences`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

CONFIDENCE = 0.95


def _continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function I_x(a, b) (modified Lentz)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def compute_incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1]; got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    # The fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _continued_fraction(b, a, 1.0 - x) / b


def compute_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive; got {df}")
    tail = 0.5 * compute_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def compute_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (e.g. 0.975, 4 -> 2.7764)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1); got {p}")
    if p < 0.5:
        return -compute_t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while compute_t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):  # bisection: the bracket halves each step, so this reaches double precision
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if compute_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and a two-sided Student-t interval of ``n`` values.

    ``std`` and the interval are None for a single value (no spread can be estimated).
    """

    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float | None:
        return None if self.high is None else self.high - self.mean

    def to_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci_low": self.low, "ci_high": self.high,
                "confidence": self.confidence}


def compute_mean(values: Iterable[float]) -> float:
    values = list(values)
    if not values:
        raise ValueError("the mean of no values is undefined")
    return math.fsum(values) / len(values)


def compute_sample_std(values: Iterable[float]) -> float:
    """Standard deviation with Bessel's correction (n - 1); needs two values or more."""
    values = list(values)
    if len(values) < 2:
        raise ValueError(f"the sample standard deviation needs at least 2 values; got {len(values)}")
    mean = compute_mean(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarise(values: Iterable[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean ± sample std and the ``confidence`` t-interval mean ± t_{(1+c)/2, n-1} * std / sqrt(n)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("cannot summarise no values")
    if any(math.isnan(v) for v in values):
        raise ValueError("cannot summarise NaN values")
    mean = compute_mean(values)
    if len(values) < 2:
        return Summary(len(values), mean, None, None, None, confidence)
    std = compute_sample_std(values)
    half = compute_t_quantile((1.0 + confidence) / 2.0, len(values) - 1) * std / math.sqrt(len(values))
    return Summary(len(values), mean, std, mean - half, mean + half, confidence)


def compute_paired_differences(
    values: Mapping[Hashable, float], reference: Mapping[Hashable, float]
) -> dict[Hashable, float]:
    """``values[k] - reference[k]`` for every key (e.g. seed) the two share, in ``values``' order."""
    return {key: values[key] - reference[key] for key in values if key in reference}


def summarise_paired(
    values: Mapping[Hashable, float], reference: Mapping[Hashable, float], confidence: float = CONFIDENCE
) -> Summary | None:
    """The t-interval of the paired differences ``values - reference`` (None when no key is shared)."""
    differences = compute_paired_differences(values, reference)
    return summarise(differences.values(), confidence) if differences else None


__all__ = [
    "Summary", "compute_incomplete_beta", "compute_mean", "compute_paired_differences", "compute_sample_std",
    "compute_t_cdf", "compute_t_quantile", "summarise", "summarise_paired",
]
