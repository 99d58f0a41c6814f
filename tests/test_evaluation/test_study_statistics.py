# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Statistics of the masking study, on inputs with known answers."""
import math

import pytest

from ehm_mm.evaluation import study_statistics as st


@pytest.mark.parametrize('q, df, expected', [
    (0.975, 3, 3.182446),  # textbook t tables
    (0.975, 9, 2.262157),
    (0.95, 9, 1.833113),
    (0.975, 30, 2.042272),
    (0.995, 1, 63.656741),
])
def test_t_quantiles_match_tables(q, df, expected):
    assert st.t_ppf(q, df) == pytest.approx(expected, abs=2e-6)
    assert st.t_cdf(expected, df) == pytest.approx(q, abs=1e-7)


def test_t_cdf_symmetry_and_limits():
    assert st.t_cdf(0.0, 4) == pytest.approx(0.5)
    assert st.t_cdf(-1.3, 7) == pytest.approx(1 - st.t_cdf(1.3, 7))
    # df = 1 is Cauchy: P(T <= 1) = 3/4.
    assert st.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)
    with pytest.raises(ValueError, match='degrees of freedom'):
        st.t_cdf(1.0, 0)


def test_paired_t_test_known_values():
    out = st.paired_t_test([2.0, 3.0])
    half = 12.706205 * math.sqrt(0.5) / math.sqrt(2)
    assert out['mean'] == 2.5 and out['n'] == 2
    assert out['low'] == pytest.approx(2.5 - half, abs=1e-5)
    # t = 2.5 / 0.5 = 5 with 1 df: p = 2 (1/2 - atan(5) / pi).
    assert out['t'] == pytest.approx(5.0)
    assert out['p'] == pytest.approx(1 - 2 * math.atan(5.0) / math.pi)
    assert math.isnan(st.paired_t_test([1.0])['p'])


def test_tost_known_values_and_its_interval():
    diffs = [-0.5, 1.5, 0.5, 1.0, 0.0]  # mean 0.5, sd 0.79
    out = st.tost(diffs, margin=1.0)
    se = st.mean_sd(diffs)[1] / math.sqrt(5)
    assert out['p_high'] == pytest.approx(st.t_cdf((0.5 - 1.0) / se, 4))
    assert out['p_low'] == pytest.approx(1 - st.t_cdf(1.5 / se, 4))
    assert out['p'] == max(out['p_low'], out['p_high'])
    assert not out['equivalent']  # 90% interval reaches past +1
    assert out['high'] > 1.0
    wide = st.tost(diffs, margin=2.0)
    assert wide['equivalent'] and -2.0 < wide['low'] and wide['high'] < 2.0
    with pytest.raises(ValueError, match='margin'):
        st.tost(diffs, margin=0.0)


def test_holm_textbook_example():
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx(
        [0.03, 0.06, 0.06, 0.02])
    assert st.holm([0.5, 0.9]) == [1.0, 1.0]
    assert st.holm_family({'a': 0.01, 'b': 0.02}) == pytest.approx(
        {'a': 0.02, 'b': 0.02})
    with pytest.raises(ValueError, match='p-values'):
        st.holm([1.5])


def test_power_matches_r_and_gpower():
    # R: power.t.test(n = 20, delta = 1) (two-sample, df 38): 0.8689528.
    assert st.t_test_power(38, math.sqrt(10)) == pytest.approx(
        0.8689528, abs=1e-5)
    # G*Power, one-sample / paired t, d = 0.5: n = 34 (power 0.8078);
    # d = 0.8: n = 15.
    assert st.paired_t_power(34, 0.5, 1.0) == pytest.approx(0.8078, abs=1e-3)
    assert st.paired_sample_size(0.5, 1.0) == 34
    assert st.paired_sample_size(0.8, 1.0) == 15


def test_tost_power_and_sample_size():
    # TOST power is below the one-sided power of each half and grows
    # with n; equivalence needs more seeds than a difference of the same
    # size.
    p10 = st.tost_power(10, 1.0, 1.0)
    assert 0.0 < p10 < st.paired_t_power(10, 1.0, 1.0, alternative='greater')
    assert st.tost_power(20, 1.0, 1.0) > p10
    n = st.paired_sample_size(1.0, 1.0, test='equivalence')
    assert st.tost_power(n, 1.0, 1.0) >= 0.8 > st.tost_power(n - 1, 1.0, 1.0)
    assert n >= st.paired_sample_size(1.0, 1.0)


def test_sd_and_p_from_a_published_interval():
    # The v1 (a) k-NN cell: +0.6 [-4.9, +6.0], n = 4.
    sd = st.sd_from_interval(-4.9, 6.0, 4)
    assert sd == pytest.approx(3.425, abs=1e-3)
    assert st.paired_t_test([0.6 + sd, 0.6 - sd, 0.6 + sd,
                             0.6 - sd])['sd'] == pytest.approx(
                                 sd * math.sqrt(4 / 3))
    assert st.p_from_interval(0.6, -4.9, 6.0, 4) == pytest.approx(
        2 * st.t_cdf(-0.6 / (sd / 2), 3))
    assert st.paired_sample_size(2.0, sd) == 26


@pytest.mark.parametrize('q, df, expected', [
    (0.2, 3, 1.005174),  # chi-square tables
    (0.05, 1, 0.00393214),
    (0.2, 7, 3.822322),
    (0.95, 10, 18.307038),
])
def test_chi2_quantiles_match_tables(q, df, expected):
    assert st.chi2_ppf(q, df) == pytest.approx(expected, rel=1e-5)
    assert st.chi2_cdf(expected, df) == pytest.approx(q, abs=1e-6)


def test_sd_upper_bound_of_a_pilot():
    # n = 4: sqrt(3 / 1.005174) = 1.7276.
    assert st.sd_upper_bound(1.0, 4) == pytest.approx(1.72758, rel=1e-4)
    assert st.sd_upper_bound(2.0, 30) < 2.0 * 1.2  # tightens with n
