"""Plain-Python ports of the two reference MI estimators, written from their published source.

- ``aracne3_mi``: ARACNe3 (github.com/califano-lab/ARACNe3, src/app/algorithms.cpp): ``calcAPMI``
  and its recursive ``calcAPMISplit`` on copula values, after the copula transform of
  src/app/io.cpp (rank r = 1..n ascending, value r / (n + 1)).
- ``aracne_ap_mi``: ARACNe-AP (github.com/califano-lab/ARACNe-AP, aracne/MI.java):
  ``computeMI`` on the 1-based descending ranks of common/Methods.java ``rankVector``.

Each follows its source's control flow statement by statement (recursion, comparisons, leaf
formula), in float64 instead of ARACNe3's float32, and shares nothing with ``netinfer.mi``. For
tie-free input only: ties are broken by each tool's own random numbers.
"""

from __future__ import annotations

import math

Q_THRESH = 7.815


def aracne3_mi(x, y, size_thresh=4):
    """ARACNe3's ``calcAPMI(x_vec, y_vec, q_thresh=7.815, size_thresh=4)`` on raw values."""
    n = len(x)

    def copula(values):
        order = sorted(range(n), key=lambda i: values[i])  # rankIndices, ascending
        out = [0.0] * n
        for r, i in enumerate(order):
            out[i] = (r + 1) / (n + 1)
        return out

    xs, ys = copula(x), copula(y)

    def calc_mi(num_pts, width):  # calcMI
        if num_pts == 0:
            return 0.0  # 0 * log(0) is not finite: the source returns 0
        pxy = num_pts / n
        return pxy * math.log(pxy / (width * width))

    def split(x_bound, y_bound, width, pts):  # calcAPMISplit
        if len(pts) < size_thresh:
            return calc_mi(len(pts), width)
        x_thresh = x_bound + width * 0.5
        y_thresh = y_bound + width * 0.5
        tr, br, bl, tl = [], [], [], []
        for p in pts:
            top, right = ys[p] >= y_thresh, xs[p] >= x_thresh
            if top and right:
                tr.append(p)
            elif right:
                br.append(p)
            elif top:
                tl.append(p)
            else:
                bl.append(p)
        e = len(pts) * 0.25
        chisq = sum((len(q) - e) ** 2 for q in (tr, br, bl, tl)) / e
        if chisq > Q_THRESH or len(pts) == n:
            half = width * 0.5
            return (
                split(x_thresh, y_thresh, half, tr)
                + split(x_thresh, y_bound, half, br)
                + split(x_bound, y_bound, half, bl)
                + split(x_bound, y_thresh, half, tl)
            )
        return calc_mi(len(pts), width)

    return split(0.0, 0.0, 1.0, list(range(n)))


def aracne_ap_mi(x, y):
    """ARACNe-AP's ``MI.computeMI(short[], short[])`` on raw values."""
    n = len(x)

    def rank_vector(values):  # Methods.rankVector: 1 + number of larger values
        return [1 + sum(1 for w in values if v < w) for v in values]

    def information(pxy, px, py):  # getInformation
        return 0.0 if pxy == 0 else pxy * math.log(pxy / (px * py))

    def compute(vx, vy, lim_x1, lim_x2, lim_y1, lim_y2, first_loop):
        split_x = (lim_x2 + lim_x1) // 2
        split_y = (lim_y2 + lim_y1) // 2
        q1, q2, q3, q4 = [], [], [], []
        for a, b in zip(vx, vy, strict=True):
            if a <= split_x:
                (q1 if b <= split_y else q2).append((a, b))
            else:
                (q3 if b > split_y else q4).append((a, b))
        expected = len(vx) / 4.0
        tst = sum((len(q) - expected) ** 2 for q in (q1, q2, q3, q4)) / expected
        if not (tst > Q_THRESH or first_loop):
            return information(len(vx), lim_x2 - lim_x1, lim_y2 - lim_y1)
        mi = 0.0
        for quadrant, lims in (
            (q1, (lim_x1, split_x, lim_y1, split_y)),
            (q2, (lim_x1, split_x, split_y, lim_y2)),
            (q3, (split_x, lim_x2, split_y, lim_y2)),
            (q4, (split_x, lim_x2, lim_y1, split_y)),
        ):
            if len(quadrant) > 2:
                qx, qy = zip(*quadrant, strict=True)
                mi += compute(list(qx), list(qy), *lims, False)
            else:
                mi += information(len(quadrant), lims[1] - lims[0], lims[3] - lims[2])
        return mi

    rx, ry = rank_vector(x), rank_vector(y)
    return compute(rx, ry, 0, n, 0, n, True) / n + math.log(n)
