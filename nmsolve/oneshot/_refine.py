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
    """Drop the kept column in slot p and keep the dropped one in slot q; update the state exactly.

    Two rank-one steps (remove i = S[p], then add j = D[q] into slot p, while slot q of D takes i),
    fused so that U is read once (for g) and updated once: with alpha = 1 / A_pp, ap = A[:, p],
    up = U[p, :], after the removal U' = U - alpha ap up^T, and the addition subtracts u g^T / sigma,
    u = U'[:, q], sigma = s'_q, g_t = Hd_jt - Hd_jS' U'[:, t] (computed from U, not U').
    """
    k, d = U.shape
    i, j = S[p], D[q]
    alpha = 1.0 / A[p, p]
    cp = c[p]
    for l in range(k):
        ap[l] = A[l, p]
    for t in range(d):
        up[t] = U[p, t]
    upq = up[q]
    for l in range(k):
        u[l] = U[l, q] - alpha * ap[l] * upq
    u[p] = 0.0
    sigma = s[q] + alpha * upq * upq
    rho = r[q] + alpha * cp * upq
    # g_t = Hd[j, D_t] - sum_{l != p} Hd[j, S_l] (U[l, t] - alpha ap_l up_t)
    ha = 0.0
    for t in range(d):
        g[t] = hd[j, D[t]]
    for l in range(k):
        if l != p:
            h = hd[j, S[l]]
            if h != 0.0:
                ha += h * ap[l]
                for t in range(d):
                    g[t] -= h * U[l, t]
    for t in range(d):
        g[t] += alpha * ha * up[t]
    g[q] = hd[j, i] + alpha * ha  # slot q of D holds i after the removal: U'[:, q] = -alpha ap
    inv_sigma = 1.0 / sigma
    for l in range(k):
        fa = alpha * ap[l]
        fu = u[l] * inv_sigma
        for t in range(d):
            U[l, t] -= fa * up[t] + fu * g[t]
        U[l, q] = -fa - fu * g[q]
    for t in range(d):
        U[p, t] = g[t] * inv_sigma
    # r' = r + alpha cp up, s' = s + alpha up^2 (slot q: alpha cp and alpha), then the addition
    for t in range(d):
        r[t] += alpha * cp * up[t]
        s[t] += alpha * up[t] * up[t]
    r[q] = alpha * cp
    s[q] = alpha
    for t in range(d):
        r[t] -= g[t] * rho * inv_sigma
        s[t] -= g[t] * g[t] * inv_sigma
    for l in range(k):
        fa = alpha * ap[l]
        fu = u[l] * inv_sigma
        for l2 in range(k):
            A[l, l2] += fu * u[l2] - fa * ap[l2]
        c[l] -= fa * cp + fu * rho
    for l in range(k):
        A[p, l] = -u[l] * inv_sigma
        A[l, p] = -u[l] * inv_sigma
    A[p, p] = inv_sigma
    c[p] = rho * inv_sigma
    D[q] = i
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
