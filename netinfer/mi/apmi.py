"""Adaptive-partitioning mutual information (the ARACNe estimator) in Numba kernels.

The estimator, as ARACNe-AP and ARACNe3 define it:

1. Each gene's values over the m samples are replaced by their ranks 0..m-1 (ties broken at
   random, with a seeded generator), so every gene is a permutation of 0..m-1.
2. The joint rank square [0, m) x [0, m) is split recursively into four quadrants at the midpoint
   of the current cell in both coordinates, so cells stay square in rank space. At depth d the
   cells are [k m / 2^d, (k + 1) m / 2^d) in each coordinate. The root is always split.
3. A cell with at least ``min_split`` points is split further only if the chi-square statistic of
   its four quadrant counts (expected count n_cell / 4) exceeds 7.815 (df 3, 95%). ARACNe-AP
   tests cells with 3 points or more (``min_split=3``), ARACNe3 with 4 or more (``min_split=4``).
4. Every leaf with n_c points and widths w_x, w_y (the number of ranks its intervals hold) adds
   n_c ln(n_c / (w_x w_y)); MI = sum / m + ln m, in nats. This is the mutual information of the
   partition's empirical cell distribution against the product of its marginals, so MI >= 0.

Where the midpoints fall (``partition``); the three agree on the idea and differ on rounding:

- ``"netinfer"`` (default): the cells of step 2, with widths counted in ranks, so that every leaf
  term uses the true number of ranks its intervals hold.
- ``"aracne3"``: ARACNe3's ``calcAPMISplit``. Ranks become copula values (r + 1) / (m + 1) in
  (0, 1), cells are [k / 2^d, (k + 1) / 2^d) and a leaf's width is its nominal 2^-d, whatever the
  number of ranks inside (here m 2^-d in rank units, which gives the same MI).
- ``"aracne-ap"``: ARACNe-AP's ``MI.computeMI``. Ranks run from 1 for the largest value to m for the
  smallest; a cell holding ranks (lo, hi] is split at the integer (lo + hi) // 2, so the halves
  differ by one rank when the width is odd, and widths are counted in ranks.

With the reference's leaf rule and partition, MI equals the reference's on tie-free data (checked
against independent ports of both in ``tests/reference_ports.py``); with ties, each tool breaks
them with its own random numbers.

Implementation: every partition is a binary tree of rank intervals, so rank r gets a D-bit code
whose top d bits are the index of its depth-d interval (for ``"netinfer"``: code = floor(r 2^D / m)
with 2^D >= m). So each gene's ranks are turned once per resample into codes, a cell's quadrant is
two bit tests, and the interval widths come from one table per partition and sample size. The root
(always split) needs the 4 x 4 counts of the depth-2 grid: each gene also gets, once per resample,
four bitsets over its samples (one per depth-2 interval), and a pair's 16 counts are popcounts of
9 ANDs of them (the last row and column follow from the interval sizes), about m / 8 word
operations instead of one pass over its m points. Under independence each root quadrant is split
with probability 0.05, so about 80% of pairs end there. Below the root each pair is processed with
an explicit stack over cells whose points are kept contiguous in a scratch buffer; a cell's points
are only reordered when one of its quadrants will be split. Every MI value is written by exactly
one loop iteration and nothing is reduced across threads, so results do not depend on the thread
count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

CHI2_SPLIT = 7.815  # chi-square, 3 degrees of freedom, 95%

#: ``leaf_rule`` name -> the smallest cell that is tested for a further split.
LEAF_RULES = {"aracne-ap": 3, "aracne3": 4}


def min_split_for(leaf_rule: str) -> int:
    """The smallest point count that ARACNe-AP (3) or ARACNe3 (4) tests for a split."""
    try:
        return LEAF_RULES[leaf_rule]
    except KeyError:
        raise ValueError(
            f"leaf_rule must be one of {sorted(LEAF_RULES)}, not {leaf_rule!r}"
        ) from None


#: The partitions: where a cell's midpoint falls (see the module docstring).
PARTITIONS = ("netinfer", "aracne3", "aracne-ap")


def code_depth(m: int) -> int:
    """Number of bits D with 2^D >= m (at least 2), so that distinct ranks get distinct codes."""
    return max(2, int(m - 1).bit_length())


def _lower_bounds(m: int, partition: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Per depth d, the first position of each of the 2^d intervals (plus m at the end), and the
    position of each rank 0..m-1 (its place in the partition's rank order)."""
    if partition == "netinfer":
        depth = code_depth(m)
        bounds = [-((-np.arange(2**d + 1) * m) // 2**d) for d in range(depth + 1)]  # ceil
        return bounds, np.arange(m)
    if partition == "aracne3":
        # copula value (r + 1) / (m + 1) >= k / 2^d  <=>  r >= k (m + 1) / 2^d - 1
        depth = max(2, int(m).bit_length())  # 2^D >= m + 1 separates all m copula values
        bounds = [
            np.clip(-((-np.arange(2**d + 1) * (m + 1)) // 2**d) - 1, 0, m) for d in range(depth + 1)
        ]
        return bounds, np.arange(m)
    if partition == "aracne-ap":
        # nested integer bisection of [0, m) over descending ranks (largest value first)
        depth = code_depth(m)
        bounds = [np.array([0, m])]
        for _ in range(depth):
            lo, hi = bounds[-1][:-1], bounds[-1][1:]
            bounds.append(np.append(np.column_stack([lo, (lo + hi) // 2]).ravel(), m))
        return bounds, m - 1 - np.arange(m)
    raise ValueError(f"partition must be one of {PARTITIONS}, not {partition!r}")


def partition_tables(m: int, partition: str = "netinfer") -> tuple[np.ndarray, np.ndarray]:
    """The code of each rank 0..m-1 and the interval widths of a partition of m ranks.

    Returns
    -------
    codes_of_rank
        int32, length m: the D-bit code of each rank (top d bits: its depth-d interval).
    widths
        float64, length 2^(D + 1): ``widths[2^d + k]`` is the width, in ranks, that the leaf
        term uses for interval k at depth d. Its length gives D.
    """
    if m < 2:
        raise ValueError(f"a partition needs at least 2 ranks, not {m}")
    bounds, position = _lower_bounds(m, partition)
    depth = len(bounds) - 1
    codes_of_rank = (np.searchsorted(bounds[-1], position, side="right") - 1).astype(np.int32)
    if partition == "aracne3":
        widths = [np.full(2**d, m / 2**d) for d in range(depth + 1)]
    else:
        widths = [np.diff(b).astype(np.float64) for b in bounds]
    return codes_of_rank, np.concatenate([[0.0], *widths])


@njit(cache=True, inline="always")
def _rank_in_order(order, sorted_values, priorities, ranks):
    """Write ranks 0..m-1 into ``ranks`` from ``order`` (positions sorted by value, tied ones in
    position order) and the values in that order, reordering each run of tied values by
    ``priorities``."""
    m = order.shape[0]
    start = 0
    while start < m:
        stop = start + 1
        while stop < m and sorted_values[stop] == sorted_values[start]:
            stop += 1
        if stop - start > 1:
            tied = order[start:stop].copy()
            by_priority = np.argsort(priorities[tied], kind="mergesort")
            order[start:stop] = tied[by_priority]
        start = stop
    for r in range(m):
        ranks[order[r]] = r


@njit(cache=True, parallel=True)
def resample_ranks(values, order, draws, priorities):
    """Ranks 0..m-1 of every gene over the samples ``draws``, ties broken by ``priorities``.

    ``values`` is genes x n (all samples), ``order`` each row's stable argsort, ``draws`` the
    resample's sample indices in ascending order (repeats allowed: a repeated sample's values
    tie), ``priorities`` genes x len(draws) (e.g. uniform random numbers drawn outside the kernel
    from a seeded generator). Walking a gene's sorted samples and emitting each one's draws gives
    the resample's stable sort order in O(n), so one sort per gene serves every resample.
    """
    n_genes, n = values.shape
    m = draws.shape[0]
    first_draw = np.zeros(n + 1, dtype=np.int64)  # draws of sample s: first_draw[s]..[s + 1]
    for j in range(m):
        first_draw[draws[j] + 1] += 1
    for s in range(n):
        first_draw[s + 1] += first_draw[s]
    ranks = np.empty((n_genes, m), dtype=np.int32)
    for g in prange(n_genes):
        resample_order = np.empty(m, dtype=np.int64)
        sorted_values = np.empty(m, dtype=np.float64)
        k = 0
        for r in range(n):
            sample = order[g, r]
            for j in range(first_draw[sample], first_draw[sample + 1]):
                resample_order[k] = j
                sorted_values[k] = values[g, sample]
                k += 1
        _rank_in_order(resample_order, sorted_values, priorities[g], ranks[g])
    return ranks


def random_tie_ranks(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ranks 0..m-1 of every row of ``values`` (genes x samples, int32), ties broken at random:
    ``rng`` draws a priority per value (uniform, genes x samples) that orders tied samples, so
    each gene gets its own random tie order."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    priorities = rng.random(values.shape)
    # int32, as SortedGenes has it: one compiled signature of the kernel
    order = np.argsort(values, axis=1, kind="stable").astype(np.int32)
    return resample_ranks(values, order, np.arange(values.shape[1]), priorities)


def rank_codes(ranks: np.ndarray, partition: str = "netinfer") -> tuple[np.ndarray, np.ndarray]:
    """Cell codes of rank rows (genes x m) and the partition's width table (see
    ``partition_tables``): the two arrays the MI kernels take."""
    codes_of_rank, widths = partition_tables(ranks.shape[1], partition)
    return codes_of_rank[ranks], widths


@njit(cache=True, inline="always")
def _depth(widths):
    """D, from the width table's length 2^(D + 1)."""
    n, depth = widths.shape[0], -1
    while n > 1:
        n >>= 1
        depth += 1
    return depth


@njit(cache=True)
def _leaf(n, kx, ky, d, widths):
    level = np.int64(1) << d
    return n * math.log(n / (widths[level + kx] * widths[level + ky]))


@njit(cache=True, inline="always")
def _quadrant(x, y, shift):
    return (((x >> shift) & 1) << 1) | ((y >> shift) & 1)


@njit(cache=True)
def _split_children(counts, kx, ky, d, widths, min_split, can_split):
    """Test the four quadrants of a cell at depth d that is being split.

    ``counts[4 q + s]`` holds the points of quadrant q's sub-quadrant s. Returns a bit mask of the
    quadrants to split further and the summed leaf terms of the others.
    """
    split_mask = 0
    leaves = 0.0
    for q in range(4):
        n_child = counts[q * 4] + counts[q * 4 + 1] + counts[q * 4 + 2] + counts[q * 4 + 3]
        if n_child == 0:
            continue
        split = False
        if can_split and n_child >= min_split:
            expected = n_child / 4.0
            chi2 = 0.0
            for s in range(4):
                dev = counts[q * 4 + s] - expected
                chi2 += dev * dev
            split = chi2 / expected > CHI2_SPLIT
        if split:
            split_mask |= 1 << q
        else:
            leaves += _leaf(n_child, (kx << 1) | (q >> 1), (ky << 1) | (q & 1), d + 1, widths)
    return split_mask, leaves


@njit(cache=True)
def _push_children(stack, top, offsets, start, split_mask, d, kx, ky):
    """Push the quadrants in ``split_mask``; quadrant q holds points [offsets[q-1], offsets[q])."""
    child_start = start
    for q in range(4):
        if (split_mask >> q) & 1:
            stack[top, 0] = child_start
            stack[top, 1] = offsets[q]
            stack[top, 2] = d + 1
            stack[top, 3] = (kx << 1) | (q >> 1)
            stack[top, 4] = (ky << 1) | (q & 1)
            top += 1
        child_start = offsets[q]
    return top


_ONE = np.uint64(1)
_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_BYTES = np.uint64(0x0101010101010101)


@njit(cache=True, inline="always")
def _popcount(x):
    """Set bits of a uint64 (the SWAR sum, which LLVM compiles to one popcnt instruction)."""
    x = x - ((x >> _ONE) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return np.int64((x * _BYTES) >> np.uint64(56))


@njit(cache=True)
def quadrant_bitsets(codes, depth):
    """Per gene (row of ``codes``), the samples of each of its four depth-2 intervals.

    Returns ``bits`` (genes x 4 x ceil(m / 64), uint64: bit i of ``bits[g, k]`` is set when
    sample i of gene g lies in interval k) and ``sizes`` (genes x 4: the points of each).
    """
    n_genes, m = codes.shape
    bits = np.zeros((n_genes, 4, (m + 63) >> 6), dtype=np.uint64)
    sizes = np.zeros((n_genes, 4), dtype=np.int64)
    shift = depth - 2
    for g in range(n_genes):
        for i in range(m):
            k = (codes[g, i] >> shift) & 3
            bits[g, k, i >> 6] |= _ONE << np.uint64(i & 63)
            sizes[g, k] += 1
    return bits, sizes


@njit(cache=True, inline="always")
def _root_counts(bx, by, nx, ny, counts):
    """The depth-2 grid of a pair as ``counts[4 q + s]`` (quadrant q, sub-quadrant s), from the
    two genes' interval bitsets ``bx``, ``by`` and interval sizes ``nx``, ``ny``."""
    grid = np.empty((4, 4), dtype=np.int64)
    for i in range(3):
        for j in range(3):
            n = 0
            for w in range(bx.shape[1]):
                n += _popcount(bx[i, w] & by[j, w])
            grid[i, j] = n
    for i in range(3):
        grid[i, 3] = nx[i] - grid[i, 0] - grid[i, 1] - grid[i, 2]
    for j in range(4):
        grid[3, j] = ny[j] - grid[0, j] - grid[1, j] - grid[2, j]
    # x interval i = (x bit 1, x bit 2), y interval j likewise; q takes the first bits, s the second
    for i in range(4):
        for j in range(4):
            counts[(((i >> 1) << 1) | (j >> 1)) * 4 + (((i & 1) << 1) | (j & 1))] = grid[i, j]


@njit(cache=True, inline="always")
def apmi_codes(cx, cy, bx, by, nx, ny, widths, min_split, points, scratch, stack):
    """Adaptive-partitioning MI (nats) of one pair, given the two genes' cell codes, their
    depth-2 bitsets and interval sizes (``quadrant_bitsets``) and the partition's width table.

    ``points``, ``scratch`` (length m) and ``stack`` (shape (4 * depth + 4, 5)) are work buffers
    the caller allocates once and reuses across pairs.
    """
    m = cx.shape[0]
    depth = _depth(widths)
    counts = np.zeros(16, dtype=np.int64)
    offsets = np.empty(4, dtype=np.int64)
    # The root is always split; its quadrants' counts come from the bitsets.
    _root_counts(bx, by, nx, ny, counts)
    split_mask, total = _split_children(counts, 0, 0, 0, widths, min_split, True)
    if split_mask == 0:
        return total / m + math.log(m)
    # stack rows: start, stop, depth, kx, ky of the cells that are being split. The points of a
    # root quadrant to split, in sample order, are the set bits of its two intervals' bitsets.
    top = 0
    run = 0
    for q in range(4):
        if not (split_mask >> q) & 1:
            continue
        kx, ky = q >> 1, q & 1
        stack[top, 0] = run
        for w in range(bx.shape[1]):
            word = (bx[2 * kx, w] | bx[2 * kx + 1, w]) & (by[2 * ky, w] | by[2 * ky + 1, w])
            while word:
                lowest = word & (~word + _ONE)
                points[run] = (w << 6) + _popcount(lowest - _ONE)
                run += 1
                word ^= lowest
        stack[top, 1] = run
        stack[top, 2] = 1
        stack[top, 3] = kx
        stack[top, 4] = ky
        top += 1
    while top > 0:
        top -= 1
        start, stop, d, kx, ky = (
            stack[top, 0],
            stack[top, 1],
            stack[top, 2],
            stack[top, 3],
            stack[top, 4],
        )
        child_shift = depth - d - 1
        grand_shift = depth - d - 2
        can_split = grand_shift >= 0  # else the children are single ranks wide
        counts[:] = 0
        for j in range(start, stop):
            p = points[j]
            q = _quadrant(cx[p], cy[p], child_shift)
            counts[q * 4 + (_quadrant(cx[p], cy[p], grand_shift) if can_split else 0)] += 1
        split_mask, leaves = _split_children(counts, kx, ky, d, widths, min_split, can_split)
        total += leaves
        if split_mask == 0:
            continue
        # reorder the cell's points by quadrant (counting sort) before pushing the ones to split
        run = start
        for q in range(4):
            offsets[q] = run
            run += counts[q * 4] + counts[q * 4 + 1] + counts[q * 4 + 2] + counts[q * 4 + 3]
        for j in range(start, stop):
            p = points[j]
            q = _quadrant(cx[p], cy[p], child_shift)
            scratch[offsets[q]] = p
            offsets[q] += 1
        points[start:stop] = scratch[start:stop]
        top = _push_children(stack, top, offsets, start, split_mask, d, kx, ky)
    return total / m + math.log(m)


@njit(cache=True)
def _work_buffers(m, depth):
    return (
        np.empty(m, dtype=np.int64),
        np.empty(m, dtype=np.int64),
        np.empty((4 * depth + 4, 5), dtype=np.int64),
    )


def apmi_regulators(codes, reg_cols, widths, min_split, regulators_per_call=16):
    """MI of every regulator (rows of the result) against every gene (columns).

    ``codes`` is genes x m; ``reg_cols[i]`` is regulator i's gene row. A regulator's pair with
    itself is 0. A pair of two regulators is computed once (by the earlier regulator) and
    mirrored, so the matrix is exactly symmetric on regulator pairs. The pairs go to the pair
    kernel a few regulators at a time, so the pair lists stay small and a first run compiles one
    parallel kernel, not two.
    """
    reg_cols = np.asarray(reg_cols, dtype=np.int64)
    n_regs, n_genes = reg_cols.size, codes.shape[0]
    reg_of_gene = np.full(n_genes, n_regs, dtype=np.int64)  # n_regs: not a regulator
    reg_of_gene[reg_cols] = np.arange(n_regs)
    bits, sizes = quadrant_bitsets(codes, _depth(widths))
    mi = np.zeros((n_regs, n_genes), dtype=np.float64)
    for start in range(0, n_regs, regulators_per_call):
        rows = np.arange(start, min(n_regs, start + regulators_per_call))
        # regulator i computes gene g unless g is regulator j <= i (itself, or mirrored below)
        row, gene = np.divmod(np.flatnonzero(reg_of_gene[None, :] > rows[:, None]), n_genes)
        row += start  # contiguous index arrays: the signature the pair kernel is compiled for
        mi[row, gene] = _apmi_pairs(codes, bits, sizes, reg_cols[row], gene, widths, min_split)
    earlier, later = np.triu_indices(n_regs, k=1)
    mi[later, reg_cols[earlier]] = mi[earlier, reg_cols[later]]
    return mi


def apmi_pairs(codes, first, second, widths, min_split):
    """MI of the gene pairs (first[k], second[k]), rows of ``codes``."""
    bits, sizes = quadrant_bitsets(codes, _depth(widths))
    first = np.ascontiguousarray(first, dtype=np.int64)
    second = np.ascontiguousarray(second, dtype=np.int64)
    return _apmi_pairs(codes, bits, sizes, first, second, widths, min_split)


@njit(cache=True, parallel=True)
def _apmi_pairs(codes, bits, sizes, first, second, widths, min_split):
    """The pair kernel of ``apmi_pairs``; parallel over fixed blocks of pairs."""
    n_pairs = first.shape[0]
    m = codes.shape[1]
    out = np.empty(n_pairs, dtype=np.float64)
    depth = _depth(widths)
    block = 256
    n_blocks = (n_pairs + block - 1) // block
    for b in prange(n_blocks):
        points, scratch, stack = _work_buffers(m, depth)
        for k in range(b * block, min(n_pairs, (b + 1) * block)):
            a, c = first[k], second[k]
            out[k] = apmi_codes(
                codes[a],
                codes[c],
                bits[a],
                bits[c],
                sizes[a],
                sizes[c],
                widths,
                min_split,
                points,
                scratch,
                stack,
            )
    return out


def apmi(
    x: np.ndarray,
    y: np.ndarray,
    *,
    leaf_rule: str = "aracne-ap",
    partition: str = "netinfer",
    seed: int = 0,
) -> float:
    """Adaptive-partitioning mutual information (nats) between two vectors.

    Parameters
    ----------
    x, y
        Values of two variables over the same samples.
    leaf_rule
        ``"aracne-ap"`` (cells of 3 points or more are tested for a split) or ``"aracne3"`` (4).
    partition
        Where cell midpoints fall: ``"netinfer"``, ``"aracne3"`` or ``"aracne-ap"`` (see the
        module docstring).
    seed
        Seed of the random tie-breaking.

    Returns
    -------
    The MI estimate in nats.
    """
    values = np.vstack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    if values.shape[1] < 2:
        raise ValueError("apmi needs at least 2 samples")
    ranks = random_tie_ranks(values, np.random.default_rng(seed))
    codes, widths = rank_codes(ranks, partition)
    pair = np.array([0], dtype=np.int64), np.array([1], dtype=np.int64)
    return float(apmi_pairs(codes, *pair, widths, min_split_for(leaf_rule))[0])
