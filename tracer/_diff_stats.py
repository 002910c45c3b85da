"""The statistics of ``spectrace diff``: is a difference beyond noise, and is a chunk an outlier?

Why Welch's t rather than a bootstrap: ``bench.json`` keeps only mean, std and n per phase
(seed 003's protocol), and Welch's test needs nothing more, so run directories and bench
outputs are judged by the same rule; with n=5 a side, a bootstrap would also resample five
values, which says little. Welch's t does not assume equal variances (a device-scoring run is
much steadier than a host-scoring one). Many rows are tested at once (windows, parts,
categories: 50 in a speculative run), so the flags are Benjamini–Hochberg's: at most a fraction
``alpha`` of the flagged rows are expected to be noise, and when nothing differs (a run
against a rerun of itself) the chance of any flag at all stays ``alpha``. Holm's family-wise
correction was tried first: over 50 rows with n = 5 it called the 201 MB ``past_key`` copy of
the H200 host-scoring run (76 ± 32 ms, absent on the other side) "within noise".

Pure Python (``math``): the Student-t tail is the regularized incomplete beta function,
evaluated by its continued fraction (Numerical Recipes' ``betacf``), so no scipy is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from .benchstats import Stat

__all__ = ["Test", "t_two_sided_p", "t_critical", "compare_stats", "bh", "holm", "mad_outliers", "median"]


def _betacf(a: float, b: float, x: float) -> float:
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom (df may be fractional)."""
    if math.isinf(t):
        return 0.0
    return min(1.0, max(0.0, _betainc(df / 2.0, 0.5, df / (df + t * t))))


def t_critical(alpha: float, df: float) -> float:
    """The two-sided critical value: ``t_two_sided_p(t_critical(a, df), df) == a`` (bisection)."""
    lo, hi = 0.0, 1.0
    while t_two_sided_p(hi, df) > alpha:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_two_sided_p(mid, df) > alpha else (lo, mid)
    return (lo + hi) / 2.0


@dataclass(frozen=True)
class Test:
    """One comparison of A against B: the statistic, its p-value, the 95%-style interval half-width."""

    method: str  # "welch" (n >= 2 a side), "prediction" (one side n == 1), "exact" (no spread), "none"
    t: float | None
    df: float | None
    p: float | None
    half_width: float | None  # Δ ± half_width is the (1 - alpha) interval of the difference

    def as_dict(self) -> dict:
        return {"method": self.method, "t": self.t, "df": self.df, "p": self.p, "ci_half_width": self.half_width}


NOT_TESTED = Test("none", None, None, None, None)


def compare_stats(a: Stat, b: Stat, *, alpha: float = 0.05) -> Test:
    """Welch's t of ``a.mean - b.mean`` from mean, std and n alone.

    n >= 2 on both sides: Welch's t with the Welch–Satterthwaite df. One side a single run:
    whether it lies outside the other side's prediction interval (t = (x - mean) / (s·√(1+1/n)),
    df = n - 1). Both single runs: not tested (no noise estimate exists). No spread at all on
    either side (byte counts): the difference is exact, p is 0 or 1.
    """
    d = a.mean - b.mean
    if a.n < 2 and b.n < 2:
        return NOT_TESTED
    if a.n >= 2 and b.n >= 2:
        va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / ((va ** 2 / (a.n - 1) if va else 0.0) + (vb ** 2 / (b.n - 1) if vb else 0.0)) \
            if se > 0 else None
        method = "welch"
    else:
        ref = b if a.n < 2 else a
        se = ref.std * math.sqrt(1.0 + 1.0 / ref.n)
        df = float(ref.n - 1)
        method = "prediction"
    if se == 0 or df is None:
        return Test("exact", None, None, 0.0 if d != 0 else 1.0, 0.0)
    t = d / se
    return Test(method, t, df, t_two_sided_p(t, df), t_critical(alpha, df) * se)


def holm(ps: Sequence[float | None], alpha: float) -> list[bool | None]:
    """Holm's step-down: which p-values are significant with the family-wise error kept at
    ``alpha``. ``None`` (not tested) stays ``None`` and does not count in the family."""
    tested = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    out: list[bool | None] = [None if p is None else False for p in ps]
    m = len(tested)
    for rank, (p, i) in enumerate(tested):
        if p > alpha / (m - rank):
            break
        out[i] = True
    return out


def bh(ps: Sequence[float | None], alpha: float) -> list[bool | None]:
    """Benjamini–Hochberg: the largest k with ``p_(k) <= k/m · alpha``; the k smallest are
    significant (false discovery rate ``alpha``). ``None`` (not tested) stays ``None``."""
    tested = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    out: list[bool | None] = [None if p is None else False for p in ps]
    m = len(tested)
    k = max((rank + 1 for rank, (p, _) in enumerate(tested) if p <= (rank + 1) / m * alpha), default=0)
    for _, i in tested[:k]:
        out[i] = True
    return out


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return 0.0 if n == 0 else s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0


#: Scales the median absolute deviation to the standard deviation of normal data.
MAD_SCALE = 1.4826


def mad_outliers(values: Sequence[float], *, k: float = 5.0, rel: float = 0.5,
                 min_count: int = 3) -> list[tuple[int, float, float]]:
    """``(index, value, excess over the median)`` of each value far *above* its siblings.

    The rule: ``value > median + k · 1.4826 · MAD`` and ``value > (1 + rel) · median``, over
    groups of at least ``min_count``. The MAD term makes it robust (one slow chunk cannot hide
    itself by inflating a standard deviation); the relative floor keeps a tight loop, whose
    MAD is a few microseconds, from flagging every bit of jitter.
    """
    if len(values) < min_count:
        return []
    med = median(values)
    mad = MAD_SCALE * median([abs(v - med) for v in values])
    return [(i, v, v - med) for i, v in enumerate(values) if v - med > k * mad and v > (1.0 + rel) * med]
