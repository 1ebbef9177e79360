"""Compiled swap search of :func:`nmsolve.oneshot.refine.refine_mask` (one row per task).

For a row ``w`` with kept set ``S`` and dropped set ``D`` (damped Gram matrix ``Hd``, ``b = Hd w``),
the state of a row is

* ``A = (Hd_SS)^-1`` (``k x k``), ``c = A b_S`` (the re-fitted kept weights),
* ``U = A Hd_SD`` (``k x d``), ``s_t = Hd_tt - Hd_tS U[:, t]`` (Schur complements of the dropped
  columns), ``r_t = b_t - Hd_tS c`` (their residual correlations),

stored by slot: slot ``p`` of ``S`` and slot ``q`` of ``D`` (``slot[column]`` says which). The
re-fitted error of the row is ``w^T Hd w - f(S)`` with ``f(S) = b_S^T A b_S``; dropping the kept
column in slot ``p`` and keeping the dropped one in slot ``q`` changes ``f`` by::

    -c_p^2 / A_pp + (r_q + U_pq c_p / A_pp)^2 / (s_q + U_pq^2 / A_pp)

(the first term is the OBS loss of removing ``p``; removing it changes ``r_q`` and ``s_q`` of every
dropped column by the rank-one terms above, and the second term is the gain of adding ``q`` then).
An accepted swap updates the state in two exact rank-one steps, ``O(k d)``.
"""

from __future__ import annotations

import numpy as np

from nmsolve._jit import kernel, prange

LOCAL_OPTIMUM, OUT_OF_SWEEPS, NEEDS_REFRESH = 0, 1, 2


@kernel()
def _swap(hd, S, D, A, c, U, r, s, kept, slot, p, q, ap, up, u, g):  # type: ignore[no-untyped-def]
    """Drop the kept column in slot p and keep the dropped one in slot q; update the state exactly."""
    k, d = U.shape
    i, j = S[p], D[q]
    app = A[p, p]
    cp = c[p]
    for l in range(k):
        ap[l] = A[l, p]
    for t in range(d):
        up[t] = U[p, t]
    # step 1: remove i (slot p of S empties; A, c, U lose it; r, s of every dropped column gain it)
    for l in range(k):
        f = ap[l] / app
        for l2 in range(k):
            A[l, l2] -= f * ap[l2]
        c[l] -= f * cp
        for t in range(d):
            U[l, t] -= f * up[t]
    for t in range(d):
        r[t] += up[t] * cp / app
        s[t] += up[t] * up[t] / app
    for l in range(k):
        u[l] = U[l, q]
    u[p] = 0.0
    sigma = s[q]
    rho = r[q]
    # slot q of D now holds i: U' Hd_{S'i} = -A_{S'p} / A_pp, s_i = 1 / A_pp, r_i = c_p / A_pp
    for l in range(k):
        U[l, q] = -ap[l] / app
    U[p, q] = 0.0
    s[q] = 1.0 / app
    r[q] = cp / app
    D[q] = i
    # step 2: add j in slot p (bordered inverse); g_t = Hd_jt - Hd_jS' U'[:, t]
    for t in range(d):
        g[t] = hd[j, D[t]]
    for l in range(k):
        if l != p:
            h = hd[j, S[l]]
            if h != 0.0:
                for t in range(d):
                    g[t] -= h * U[l, t]
    for l in range(k):
        f = u[l] / sigma
        if f != 0.0:
            for t in range(d):
                U[l, t] -= f * g[t]
    for t in range(d):
        U[p, t] = g[t] / sigma
        r[t] -= g[t] * rho / sigma
        s[t] -= g[t] * g[t] / sigma
    for l in range(k):
        f = u[l] / sigma
        for l2 in range(k):
            A[l, l2] += f * u[l2]
        c[l] -= f * rho
    for l in range(k):
        A[p, l] = -u[l] / sigma
        A[l, p] = -u[l] / sigma
    A[p, p] = 1.0 / sigma
    c[p] = rho / sigma
    S[p] = j
    kept[i] = False
    kept[j] = True
    slot[i] = q
    slot[j] = p


@kernel()
def swap_gain(A, c, U, r, s, p, q):  # type: ignore[no-untyped-def]
    """The exact change of f(S) when the kept slot p is swapped with the dropped slot q."""
    app = A[p, p]
    cp = c[p]
    upq = U[p, q]
    num = r[q] + upq * cp / app
    return -cp * cp / app + num * num / (s[q] + upq * upq / app)


@kernel(parallel=True)
def search_rows(  # type: ignore[no-untyped-def]
    hd, S, D, A, c, U, r, s, kept, slot, m, threshold, max_sweeps, refresh, pos, quiet, visited, swaps, status
):
    """Best in-group swap per group, groups in cyclic order, per row until a local optimum.

    A row stops at a local optimum (``quiet[row]`` = every group visited since the last swap),
    after ``max_sweeps`` passes over its groups, or after ``refresh`` swaps (its state is then
    recomputed from scratch by the caller and the search resumes at ``pos[row]``).
    """
    rows = S.shape[0]
    cols = kept.shape[1]
    groups = cols // m
    k = S.shape[1]
    d = D.shape[1]
    for row in prange(rows):
        ap = np.empty(k)
        u = np.empty(k)
        up = np.empty(d)
        g = np.empty(d)
        since = 0
        while True:
            if quiet[row] >= groups:
                status[row] = 0
                break
            if visited[row] >= max_sweeps * groups:
                status[row] = 1
                break
            if since >= refresh:
                status[row] = 2
                break
            grp = pos[row]
            best = threshold[row]
            bp = -1
            bq = -1
            for i in range(grp * m, grp * m + m):
                if kept[row, i]:
                    p = slot[row, i]
                    for j in range(grp * m, grp * m + m):
                        if not kept[row, j]:
                            q = slot[row, j]
                            gain = swap_gain(A[row], c[row], U[row], r[row], s[row], p, q)
                            if gain > best:
                                best = gain
                                bp = p
                                bq = q
            visited[row] += 1
            pos[row] = grp + 1 if grp + 1 < groups else 0
            if bp >= 0:
                _swap(
                    hd, S[row], D[row], A[row], c[row], U[row], r[row], s[row],
                    kept[row], slot[row], bp, bq, ap, up, u, g,
                )  # fmt: skip
                swaps[row] += 1
                since += 1
                quiet[row] = 0
            else:
                quiet[row] += 1
