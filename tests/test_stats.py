"""The statistics helper against closed forms and published t-table values."""

from __future__ import annotations

import math

import pytest

from sage_cli import stats

# Two-sided 95% critical values t_{0.975, df}: the printed t-table (12.706, 4.303, 3.182, 2.776, 2.262 ...) to 15 digits.
T_975 = {1: 12.7062047361747, 2: 4.30265272974946, 3: 3.18244630528371, 4: 2.77644510519779,
         9: 2.26215716279820, 29: 2.04522964213270, 30: 2.04227245630124, 100: 1.98397151852355}


@pytest.mark.parametrize("df", sorted(T_975))
def test_t_quantile_matches_the_table(df: int) -> None:
    assert stats.compute_t_quantile(0.975, df) == pytest.approx(T_975[df], rel=1e-12)
    assert stats.compute_t_quantile(0.025, df) == pytest.approx(-T_975[df], rel=1e-12)


def test_t_quantile_closed_forms() -> None:
    # df = 1 is the Cauchy distribution: q = tan(pi (p - 1/2)); df = 2: q = (2p - 1) / sqrt(2 p (1 - p)).
    for p in (0.6, 0.9, 0.95, 0.995):
        assert stats.compute_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)
        assert stats.compute_t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)
    assert stats.compute_t_quantile(0.95, 5) == pytest.approx(2.01504837333302, rel=1e-12)
    assert stats.compute_t_quantile(0.5, 7) == 0.0


def test_t_cdf_closed_forms() -> None:
    assert stats.compute_t_cdf(0.0, 3) == pytest.approx(0.5, abs=1e-15)
    assert stats.compute_t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-14)  # 1/2 + atan(1)/pi
    assert stats.compute_t_cdf(-1.0, 1) == pytest.approx(0.25, abs=1e-14)
    # df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    assert stats.compute_t_cdf(3.0, 2) == pytest.approx(0.5 + 3 / (2 * math.sqrt(11)), abs=1e-14)


def test_incomplete_beta_known_values() -> None:
    assert stats.compute_incomplete_beta(1, 1, 0.3) == pytest.approx(0.3, abs=1e-15)  # uniform
    assert stats.compute_incomplete_beta(2, 1, 0.5) == pytest.approx(0.25, abs=1e-15)  # x^2
    assert stats.compute_incomplete_beta(2, 3, 0.4) == pytest.approx(0.5248, abs=1e-13)  # a polynomial in x
    with pytest.raises(ValueError, match="x must be"):
        stats.compute_incomplete_beta(1, 1, 1.5)


def test_summarise_by_hand() -> None:
    s = stats.summarise([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean) == (4, 2.5)
    assert s.std == pytest.approx(math.sqrt(5 / 3), rel=1e-14)  # sum of squares 5, over n - 1 = 3
    half = T_975[3] * math.sqrt(5 / 3) / 2
    assert s.low == pytest.approx(2.5 - half, rel=1e-12) and s.high == pytest.approx(2.5 + half, rel=1e-12)
    assert s.half_width == pytest.approx(half, rel=1e-12)
    assert s.to_dict()["ci_high"] == s.high


def test_summarise_single_value_has_no_spread() -> None:
    s = stats.summarise([0.7])
    assert (s.n, s.mean, s.std, s.low, s.high) == (1, 0.7, None, None, None)
    with pytest.raises(ValueError, match="no values"):
        stats.summarise([])
    with pytest.raises(ValueError, match="NaN"):
        stats.summarise([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least 2"):
        stats.compute_sample_std([1.0])


def test_paired_differences_by_seed() -> None:
    sage = {0: 0.60, 1: 0.64, 2: 0.62, 5: 0.9}
    lift = {2: 0.57, 0: 0.58, 1: 0.60}
    diffs = stats.compute_paired_differences(sage, lift)
    assert list(diffs) == [0, 1, 2]  # seed 5 has no partner
    assert [round(v, 12) for v in diffs.values()] == [0.02, 0.04, 0.05]
    s = stats.summarise_paired(sage, lift)
    assert s is not None and s.n == 3
    assert s.mean == pytest.approx(0.11 / 3, rel=1e-12)
    sd = math.sqrt(((0.02 - 0.11 / 3) ** 2 + (0.04 - 0.11 / 3) ** 2 + (0.05 - 0.11 / 3) ** 2) / 2)
    assert s.std == pytest.approx(sd, rel=1e-9)
    assert s.high - s.mean == pytest.approx(T_975[2] * sd / math.sqrt(3), rel=1e-9)
    assert stats.summarise_paired({9: 1.0}, lift) is None
