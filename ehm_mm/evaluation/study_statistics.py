# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
"""Paired-seed statistics of a controlled study, in pure Python.

A study compares arms trained with the same seeds, so every comparison is
a paired one: the differences ``arm - reference`` per seed. This module
holds what a pre-registered report needs of them, without scipy:

- :func:`paired_t_test`: mean difference, its t interval and two-sided p;
- :func:`tost`: two one-sided tests of equivalence within ``+-margin``
  (Schuirmann 1987), the test behind a "no difference" claim;
- :func:`holm`: Holm's step-down adjustment over a declared family;
- :func:`paired_t_power`, :func:`tost_power`, :func:`paired_sample_size`:
  power and seed counts from a pilot's sd of the paired differences.

The Student t distribution comes from the regularised incomplete beta
function (a continued fraction, accurate to ~1e-12); the noncentral t of
the power functions from a quadrature over the chi distribution.
"""
import math
from typing import Dict, List, Sequence

_EPS = 1e-15


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``.

    Args:
        a (float): First shape, > 0.
        b (float): Second shape, > 0.
        x (float): Point in [0, 1].

    Returns:
        float: ``I_x(a, b)`` in [0, 1].
    """
    if not 0.0 <= x <= 1.0:
        raise ValueError(f'x must be in [0, 1], got {x}')
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) +
                 a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _check_df(df: float) -> None:
    if not df > 0:
        raise ValueError(f'degrees of freedom must be > 0, got {df}')


def t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function of Student's t.

    Args:
        t (float): The point.
        df (float): Degrees of freedom, > 0.

    Returns:
        float: ``P(T <= t)``.
    """
    _check_df(df)
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t (inverse of :func:`t_cdf`, by bisection).

    Args:
        q (float): Probability in (0, 1).
        df (float): Degrees of freedom, > 0.

    Returns:
        float: ``t`` with ``P(T <= t) = q``.
    """
    _check_df(df)
    return _invert(lambda t: t_cdf(t, df), q, -1.0, 1.0)


def _invert(cdf, q: float, low: float, high: float) -> float:
    """Solve ``cdf(x) = q`` by bisection, widening ``[low, high]`` first.

    Args:
        cdf (Callable[[float], float]): A non-decreasing function.
        q (float): Probability in (0, 1).
        low (float): Start of the bracket (doubled while ``cdf > q``; 0
            stays 0 for a distribution on ``x >= 0``).
        high (float): End of the bracket (doubled while ``cdf < q``).

    Returns:
        float: The quantile.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f'q must be in (0, 1), got {q}')
    while cdf(low) > q:
        low *= 2.0
    while cdf(high) < q:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if cdf(mid) < q:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, abs(mid)):
            break
    return (low + high) / 2.0


def normal_cdf(z: float) -> float:
    """Standard normal cumulative distribution function."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def noncentral_t_cdf(t: float, df: float, noncentrality: float,
                     steps: int = 4000) -> float:
    """Cumulative distribution function of the noncentral t.

    ``T = (Z + nc) / sqrt(V / df)`` with ``Z`` standard normal and ``V``
    chi-square with ``df`` degrees of freedom, so
    ``P(T <= t) = E_V[Phi(t * sqrt(V / df) - nc)]``. The expectation is a
    Simpson quadrature over ``u = sqrt(V)``, whose density
    ``u**(df-1) exp(-u**2 / 2)`` (normalised) is finite at 0 for df >= 1.

    Args:
        t (float): The point.
        df (float): Degrees of freedom, >= 1.
        noncentrality (float): The noncentrality ``nc``.
        steps (int): Quadrature intervals (even). Defaults to 4000.

    Returns:
        float: ``P(T <= t)``.
    """
    if not df >= 1:
        raise ValueError(f'df must be >= 1, got {df}')
    steps += steps % 2
    top = math.sqrt(df) + 12.0
    width = top / steps
    log_norm = (1.0 - df / 2.0) * math.log(2.0) - math.lgamma(df / 2.0)
    scale = t / math.sqrt(df)
    total = 0.0
    for i in range(steps + 1):
        u = i * width
        if u == 0.0:
            density = math.exp(log_norm) if df == 1 else 0.0
        else:
            density = math.exp(log_norm + (df - 1.0) * math.log(u) -
                               u * u / 2.0)
        weight = 1 if i in (0, steps) else (4 if i % 2 else 2)
        total += weight * density * normal_cdf(scale * u - noncentrality)
    return min(1.0, max(0.0, total * width / 3.0))


def mean_sd(values: Sequence[float]) -> tuple:
    """Mean and sample standard deviation (NaN sd for one value).

    Args:
        values (Sequence[float]): The values.

    Returns:
        tuple[float, float]: ``(mean, sd)``; both NaN when empty.
    """
    n = len(values)
    if n == 0:
        return float('nan'), float('nan')
    mean = sum(values) / n
    if n == 1:
        return mean, float('nan')
    var = sum((v - mean)**2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def paired_t_test(diffs: Sequence[float], confidence: float = 0.95) -> dict:
    """One-sample t test of paired differences against 0.

    Args:
        diffs (Sequence[float]): Per-seed differences ``arm - reference``.
        confidence (float): Level of the two-sided interval.
            Defaults to 0.95.

    Returns:
        dict: ``n``, ``mean``, ``sd``, ``low``, ``high`` (the t interval),
        ``t`` and ``p`` (two-sided); NaN where n < 2 leaves them undefined
        (a zero sd gives ``p`` 0 for a non-zero mean, 1 for a zero one).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f'confidence must be in (0, 1), got {confidence}')
    n = len(diffs)
    mean, sd = mean_sd(list(diffs))
    out = dict(n=n, mean=mean, sd=sd, low=float('nan'), high=float('nan'),
               t=float('nan'), p=float('nan'))
    if n < 2:
        return out
    se = sd / math.sqrt(n)
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * se
    out.update(low=mean - half, high=mean + half)
    if se == 0.0:
        out.update(t=math.copysign(math.inf, mean) if mean else 0.0,
                   p=0.0 if mean else 1.0)
        return out
    t = mean / se
    out.update(t=t, p=min(1.0, 2.0 * t_cdf(-abs(t), n - 1)))
    return out


def tost(diffs: Sequence[float], margin: float, alpha: float = 0.05) -> dict:
    """Two one-sided tests: is the mean paired difference within +-margin?

    H0: ``|mean| >= margin``; it is rejected (equivalence shown) when both
    ``t_low = (mean + margin) / se`` is significantly above 0 and
    ``t_high = (mean - margin) / se`` significantly below, each at level
    ``alpha``; equivalently, when the ``1 - 2 alpha`` t interval lies inside
    ``(-margin, margin)``.

    Args:
        diffs (Sequence[float]): Per-seed differences.
        margin (float): Equivalence margin, > 0, in the metric's units.
        alpha (float): Level of each one-sided test. Defaults to 0.05.

    Returns:
        dict: ``n``, ``mean``, ``margin``, ``p_low``, ``p_high``, ``p`` (the
        larger one, the TOST p-value), ``low`` / ``high`` (the
        ``1 - 2 alpha`` interval) and ``equivalent`` (``p < alpha``).
    """
    if not margin > 0:
        raise ValueError(f'margin must be > 0, got {margin}')
    if not 0.0 < alpha < 0.5:
        raise ValueError(f'alpha must be in (0, 0.5), got {alpha}')
    n = len(diffs)
    if n < 2:
        raise ValueError(f'TOST needs at least 2 paired differences, got {n}')
    mean, sd = mean_sd(list(diffs))
    se = sd / math.sqrt(n)
    if se == 0.0:
        p_low = 0.0 if mean > -margin else 1.0
        p_high = 0.0 if mean < margin else 1.0
        half = 0.0
    else:
        p_low = 1.0 - t_cdf((mean + margin) / se, n - 1)
        p_high = t_cdf((mean - margin) / se, n - 1)
        half = t_ppf(1.0 - alpha, n - 1) * se
    p = max(p_low, p_high)
    return dict(n=n, mean=mean, margin=margin, p_low=p_low, p_high=p_high,
                p=p, low=mean - half, high=mean + half,
                equivalent=p < alpha)


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm's step-down adjusted p-values (family-wise error control).

    The i-th smallest of m p-values is multiplied by ``m - i + 1``; the
    adjusted values are made non-decreasing in that order and capped at 1.
    A hypothesis is rejected at level alpha when its adjusted p < alpha.

    Args:
        pvalues (Sequence[float]): The family's raw p-values, in [0, 1].

    Returns:
        list[float]: Adjusted p-values, in the input order.
    """
    for p in pvalues:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f'p-values must be in [0, 1], got {p}')
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def t_test_power(df: float, noncentrality: float, alpha: float = 0.05,
                 alternative: str = 'two-sided') -> float:
    """Power of a t test with ``df`` degrees of freedom.

    Args:
        df (float): Degrees of freedom of the test statistic.
        noncentrality (float): ``effect / standard error``.
        alpha (float): Level. Defaults to 0.05.
        alternative (str): ``'two-sided'`` or ``'greater'``.
            Defaults to ``'two-sided'``.

    Returns:
        float: The probability of rejecting H0 (effect 0).
    """
    if alternative == 'two-sided':
        crit = t_ppf(1.0 - alpha / 2.0, df)
        return (1.0 - noncentral_t_cdf(crit, df, noncentrality) +
                noncentral_t_cdf(-crit, df, noncentrality))
    if alternative == 'greater':
        crit = t_ppf(1.0 - alpha, df)
        return 1.0 - noncentral_t_cdf(crit, df, noncentrality)
    raise ValueError("alternative must be 'two-sided' or 'greater', got "
                     f'{alternative!r}')


def paired_t_power(n: int, effect: float, sd: float, alpha: float = 0.05,
                   alternative: str = 'two-sided') -> float:
    """Power of the paired t test with ``n`` seeds at a true ``effect``.

    Args:
        n (int): Paired seeds, >= 2.
        effect (float): True mean difference.
        sd (float): Standard deviation of the paired differences, > 0.
        alpha (float): Level. Defaults to 0.05.
        alternative (str): See :func:`t_test_power`.
            Defaults to ``'two-sided'``.

    Returns:
        float: Power in [0, 1].
    """
    _check_n_sd(n, sd)
    return t_test_power(n - 1, effect / (sd / math.sqrt(n)), alpha,
                        alternative)


def tost_power(n: int, margin: float, sd: float, alpha: float = 0.05,
               true_difference: float = 0.0) -> float:
    """Power of :func:`tost` to show equivalence with ``n`` seeds.

    ``P(reject low) + P(reject high) - 1`` with each term a noncentral t
    probability: a lower bound of the exact power (the two rejections are
    positively dependent), tight when the power is high.

    Args:
        n (int): Paired seeds, >= 2.
        margin (float): Equivalence margin, > 0.
        sd (float): Standard deviation of the paired differences, > 0.
        alpha (float): Level of each one-sided test. Defaults to 0.05.
        true_difference (float): The true mean difference.
            Defaults to 0.0.

    Returns:
        float: Power in [0, 1].
    """
    _check_n_sd(n, sd)
    se = sd / math.sqrt(n)
    crit = t_ppf(1.0 - alpha, n - 1)
    reject_low = 1.0 - noncentral_t_cdf(crit, n - 1,
                                        (true_difference + margin) / se)
    reject_high = noncentral_t_cdf(-crit, n - 1,
                                   (true_difference - margin) / se)
    return max(0.0, reject_low + reject_high - 1.0)


def paired_sample_size(effect: float, sd: float, power: float = 0.8,
                       alpha: float = 0.05, test: str = 'difference',
                       max_n: int = 10000) -> int:
    """Smallest number of paired seeds reaching ``power``.

    Args:
        effect (float): For ``test='difference'`` the effect to detect
            (two-sided paired t); for ``'equivalence'`` the margin (TOST at
            a true difference of 0).
        sd (float): Standard deviation of the paired differences.
        power (float): Target power. Defaults to 0.8.
        alpha (float): Level. Defaults to 0.05.
        test (str): ``'difference'`` or ``'equivalence'``.
            Defaults to ``'difference'``.
        max_n (int): Give up above this. Defaults to 10000.

    Returns:
        int: The seed count (>= 2).
    """
    if test not in ('difference', 'equivalence'):
        raise ValueError("test must be 'difference' or 'equivalence', got "
                         f'{test!r}')
    if not 0.0 < power < 1.0:
        raise ValueError(f'power must be in (0, 1), got {power}')
    func = paired_t_power if test == 'difference' else tost_power
    for n in range(2, max_n + 1):
        if func(n, effect, sd, alpha) >= power:
            return n
    raise ValueError(f'more than {max_n} seeds needed for power {power} at '
                     f'{effect} with sd {sd}')


def _check_n_sd(n: int, sd: float) -> None:
    if not isinstance(n, int) or n < 2:
        raise ValueError(f'n must be an int >= 2, got {n!r}')
    if not sd > 0:
        raise ValueError(f'sd must be > 0, got {sd}')


def sd_from_interval(low: float, high: float, n: int,
                     confidence: float = 0.95) -> float:
    """The sd of paired differences behind a published t interval.

    Args:
        low (float): Lower end of the interval.
        high (float): Upper end.
        n (int): Paired seeds.
        confidence (float): Level of the interval. Defaults to 0.95.

    Returns:
        float: ``(high - low) / 2 * sqrt(n) / t_{(1+c)/2, n-1}``.
    """
    _check_n_sd(n, 1.0)
    return ((high - low) / 2.0 * math.sqrt(n) /
            t_ppf(0.5 + confidence / 2.0, n - 1))


def p_from_interval(mean: float, low: float, high: float, n: int,
                    confidence: float = 0.95) -> float:
    """Two-sided paired t p-value recovered from a published t interval.

    Args:
        mean (float): Mean difference.
        low (float): Lower end of its interval.
        high (float): Upper end.
        n (int): Paired seeds.
        confidence (float): Level of the interval. Defaults to 0.95.

    Returns:
        float: The p-value of the t test of mean 0.
    """
    sd = sd_from_interval(low, high, n, confidence)
    t = mean / (sd / math.sqrt(n))
    return min(1.0, 2.0 * t_cdf(-abs(t), n - 1))


def chi2_cdf(x: float, df: float) -> float:
    """Cumulative distribution function of the chi-square distribution.

    The regularised lower incomplete gamma ``P(df / 2, x / 2)`` by its
    power series (fine for the small df of a pilot).

    Args:
        x (float): The point, >= 0.
        df (float): Degrees of freedom, > 0.

    Returns:
        float: ``P(X <= x)``.
    """
    _check_df(df)
    if x <= 0:
        return 0.0
    a, half = df / 2.0, x / 2.0
    term = total = 1.0 / a
    for n in range(1, 10000):
        term *= half / (a + n)
        total += term
        if term < total * 1e-15:
            break
    return min(1.0, math.exp(a * math.log(half) - half - math.lgamma(a)) *
               total)


def chi2_ppf(q: float, df: float) -> float:
    """Quantile of the chi-square distribution (by bisection).

    Args:
        q (float): Probability in (0, 1).
        df (float): Degrees of freedom, > 0.

    Returns:
        float: ``x`` with ``P(X <= x) = q``.
    """
    _check_df(df)
    return _invert(lambda x: chi2_cdf(x, df), q, 0.0, max(1.0, 2.0 * df))


def sd_upper_bound(sd: float, n: int, confidence: float = 0.8) -> float:
    """One-sided upper confidence bound of a standard deviation.

    ``sd * sqrt((n - 1) / chi2_{1 - confidence, n - 1})``: the planning
    value of a pilot's sd that keeps the planned power with probability
    ``confidence`` (Browne 1995), instead of the optimistic point estimate.

    Args:
        sd (float): The pilot's sample sd.
        n (int): Its sample size, >= 2.
        confidence (float): Level of the bound. Defaults to 0.8.

    Returns:
        float: The upper bound.
    """
    _check_n_sd(n, 1.0)
    df = n - 1
    return sd * math.sqrt(df / chi2_ppf(1.0 - confidence, df))


def holm_family(pvalues: Dict[str, float]) -> Dict[str, float]:
    """:func:`holm` over a named family.

    Args:
        pvalues (dict[str, float]): Name -> raw p-value.

    Returns:
        dict[str, float]: Name -> Holm-adjusted p-value.
    """
    names = list(pvalues)
    return dict(zip(names, holm([pvalues[k] for k in names])))
