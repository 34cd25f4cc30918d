"""An independent, deliberately plain implementation of the adaptive-partitioning MI estimator.

It follows the estimator's definition with exact rational cell boundaries and counts interval
widths by enumeration, sharing no code or bit tricks with ``netinfer.mi.apmi``. Slow; for tests.
"""

from __future__ import annotations

import math
from fractions import Fraction

CHI2_SPLIT = 7.815


def brute_apmi(rx, ry, min_split):
    """MI (nats) of two rank vectors (each a permutation of 0..m-1)."""
    m = len(rx)
    points = list(zip(rx, ry))

    def width(lo, hi):
        return sum(1 for r in range(m) if lo <= r < hi)

    def leaf(cell, x_lo, x_hi, y_lo, y_hi):
        n = len(cell)
        if n == 0:
            return 0.0
        return n * math.log(n / (width(x_lo, x_hi) * width(y_lo, y_hi)))

    def visit(cell, x_lo, x_hi, y_lo, y_hi, is_root):
        if not is_root and len(cell) < min_split:
            return leaf(cell, x_lo, x_hi, y_lo, y_hi)
        x_mid = (x_lo + x_hi) / 2
        y_mid = (y_lo + y_hi) / 2
        quadrants = [
            ([p for p in cell if p[0] < x_mid and p[1] < y_mid], x_lo, x_mid, y_lo, y_mid),
            ([p for p in cell if p[0] < x_mid and p[1] >= y_mid], x_lo, x_mid, y_mid, y_hi),
            ([p for p in cell if p[0] >= x_mid and p[1] < y_mid], x_mid, x_hi, y_lo, y_mid),
            ([p for p in cell if p[0] >= x_mid and p[1] >= y_mid], x_mid, x_hi, y_mid, y_hi),
        ]
        expected = len(cell) / 4
        chi2 = sum((len(q[0]) - expected) ** 2 for q in quadrants) / expected
        if is_root or chi2 > CHI2_SPLIT:
            return sum(visit(*q, False) for q in quadrants)
        return leaf(cell, x_lo, x_hi, y_lo, y_hi)

    total = visit(points, Fraction(0), Fraction(m), Fraction(0), Fraction(m), True)
    return total / m + math.log(m)
