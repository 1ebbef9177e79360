"""Permutation searches: channel-permutation efficacy and time, Bi-Mask candidate scoring and local search."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import nmsolve
from bench._common import markdown_table, median_seconds, write_result
from nmsolve.datasets import gaussian_matrix

UNLIMITED = 10**9


# --------------------------------------------------------------------------- channel permutations


def _channel_rows(
    matrices: list[np.ndarray], n: int, m: int, runs: list[tuple[str, dict]]
) -> tuple[list[tuple], list[list]]:
    """One table row per search, and every search's results (runs x matrices)."""
    rows, results = [], []
    for label, kwargs in runs:
        found = [nmsolve.channel_permutation(w, n, m, rng=seed, **kwargs) for seed, w in enumerate(matrices)]
        effs = [r.efficacy for r in found]
        secs = [r.seconds for r in found]
        results.append(found)
        rows.append(
            (
                label,
                f"{100 * np.mean(effs):.2f}%",
                f"{100 * np.min(effs):.1f}% .. {100 * np.max(effs):.1f}%",
                f"{np.mean(secs):.3f}",
                f"{np.max(secs):.3f}",
            )
        )
    return rows, results


def exact_channel_optimum(w: np.ndarray, n: int, m: int, lower: float) -> tuple[float, float]:
    """(exact optimum, LP upper bound) of the kept magnitude over all column permutations of ``w``.

    Set partitioning: one 0/1 variable per m-subset of the columns (C(64, 4) = 635 376 for 64 columns),
    valued by the magnitude N:M keeps in it. The LP relaxation (HiGHS) bounds every permutation from
    above; with its duals y, a partition of value >= ``lower`` (any feasible value, e.g. a search's)
    can only use subsets whose reduced cost sum(y[S]) - value(S) is <= UB - lower (the values of a
    partition add up to UB - sum of its reduced costs), so the MILP over those few subsets is exact.
    """
    import itertools

    import scipy.sparse as sp
    from scipy.optimize import Bounds, LinearConstraint, linprog, milp

    scores = np.abs(np.asarray(w, dtype=np.float64))
    cols = scores.shape[1]
    combos = np.array(list(itertools.combinations(range(cols), m)), dtype=np.int64)
    values = np.empty(len(combos))
    for i in range(0, len(combos), 16384):
        part = np.sort(scores[:, combos[i : i + 16384]], axis=2)
        values[i : i + 16384] = part[:, :, m - n :].sum(axis=(0, 2))
    size = len(combos)
    members = sp.csc_matrix((np.ones(size * m), (combos.ravel(), np.repeat(np.arange(size), m))), shape=(cols, size))
    lp = linprog(-values, A_eq=members, b_eq=np.ones(cols), bounds=(0, None), method="highs")
    assert lp.status == 0, lp.message
    upper = -float(lp.fun)
    duals = -np.asarray(lp.eqlin.marginals)
    reduced = duals[combos].sum(axis=1) - values
    keep = np.flatnonzero(reduced <= upper - lower + 1e-7 * max(1.0, upper))
    exact = milp(
        -values[keep],
        constraints=LinearConstraint(members[:, keep], 1, 1),
        integrality=np.ones(len(keep)),
        bounds=Bounds(0, 1),
    )
    assert exact.status == 0, exact.message
    return max(lower, -float(exact.fun)), upper


def channel_gaussian(quick: bool) -> tuple[str, list[str]]:
    seeds = 2 if quick else 10
    shape = (32, 16) if quick else (128, 64)
    gauss = [gaussian_matrix(*shape, seed=s, dtype=np.float64) for s in range(seeds)]
    uniform = [np.random.default_rng(s).random(shape) for s in range(seeds)]
    fixed, target_swaps, many = (100, 200, 400) if quick else (8000, 20_000, 50_000)
    limit = 0.02 if quick else 1.0
    runs = [
        ("greedy column swaps (TETRIS-like)", dict(method="greedy")),
        ("stripes, 2 groups + 100 escapes (published `optimize_stripe_groups,8,100`)", dict(method="stripes")),
        (
            "stripes, 3 groups, no escapes (published best `optimize_stripe_groups,12,0`)",
            dict(method="stripes", stripe_groups=3, escapes=0),
        ),
        ("tabu, default budget (1000 swaps)", {}),
        (f"tabu, {fixed} swaps", dict(max_iter=fixed, patience=UNLIMITED)),
        (f"tabu, {fixed} swaps + assignment refinement", dict(max_iter=fixed, patience=UNLIMITED, refine=True)),
        (f"**tabu, {target_swaps} swaps (deterministic)**", dict(max_iter=target_swaps, patience=UNLIMITED)),
        (f"tabu, {limit:g} s time limit", dict(max_iter=UNLIMITED, patience=UNLIMITED, time_limit=limit)),
        (f"tabu, {many} swaps (plateau check)", dict(max_iter=many, patience=UNLIMITED)),
    ]
    header = ("search", "mean efficacy", "range", "mean s", "max s")
    g_rows, g_results = _channel_rows(gauss, 2, 4, runs)
    u_rows, _ = _channel_rows(uniform, 2, 4, [runs[2], runs[6]])
    t = next(i for i, r in enumerate(g_rows) if r[0].startswith("**"))
    mean_eff = float(g_rows[t][1].rstrip("%"))
    max_s = float(g_rows[t][4])

    # the exact optimum of every matrix (LP bound + reduced-cost fixing + MILP), seeded by the best search
    opt_rows, optima, uppers, hits = [], [], [], 0
    exact_s = 0.0
    for seed, w in enumerate(gauss):
        found = [res[seed] for res in g_results]
        lower = max(r.kept_after for r in found)
        before, bound = found[0].kept_before, found[0].bound
        tick = time.perf_counter()
        exact, upper = exact_channel_optimum(w, 2, 4, lower)
        exact_s += time.perf_counter() - tick
        eff = [(v - before) / (bound - before) for v in (exact, upper)]
        optima.append(eff[0])
        uppers.append(eff[1])
        ours = g_results[t][seed]
        hits += ours.kept_after >= exact - 1e-9 * exact
        opt_rows.append(
            (
                seed,
                f"{100 * eff[1]:.2f}%",
                f"**{100 * eff[0]:.2f}%**",
                f"{100 * ours.efficacy:.2f}%",
                f"{100 * g_results[t + 1][seed].efficacy:.2f}%",
                f"{100 * g_results[t + 2][seed].efficacy:.2f}%",
            )
        )
    opt_rows.append(
        (
            "mean",
            f"{100 * np.mean(uppers):.2f}%",
            f"**{100 * np.mean(optima):.2f}%**",
            f"{mean_eff:.2f}%",
            g_rows[t + 1][1],
            g_rows[t + 2][1],
        )
    )
    opt_header = (
        "seed",
        "LP upper bound",
        "exact optimum",
        f"tabu, {target_swaps} swaps",
        f"tabu, {limit:g} s limit",
        f"tabu, {many} swaps",
    )

    text = (
        f"### Random {shape[0]}x{shape[1]} matrices, 2:4, {seeds} seeds\n\n"
        "Efficacy = (base_lost - lost) / (base_lost - bound_lost); the bound keeps the top half of every row "
        f"unstructured. Seeds 0..{seeds - 1} of `gaussian_matrix` (float64); one search per matrix, "
        "single-threaded kernels.\n\n"
        "Gaussian entries (the target):\n\n"
        + markdown_table(header, g_rows)
        + "\n\nUniform [0, 1) entries (the distribution of the published test, whose single matrix gave 36.6% "
        "for `optimize_stripe_groups,12,0` in 0.86 s on a V100 and about 60 s for the 8-column setting on CPU):\n\n"
        + markdown_table(header, u_rows)
        + "\n\n**How far can any permutation go?** The exact optimum of each Gaussian matrix, certified by "
        f"`exact_channel_optimum` (all C({shape[1]}, 4) groups as a set-partitioning LP in HiGHS for an upper bound, "
        "then reduced-cost fixing against the best search result and a MILP over the few groups left; "
        f"{exact_s:.0f} s for all {seeds}):\n\n"
        + markdown_table(opt_header, opt_rows)
        + f"\n\nThe {seeds} matrices' optima average **{100 * np.mean(optima):.2f}%**"
        + (", so no search can reach a mean of 40% on them" if np.mean(optima) < 0.4 else "")
        + f"; the {target_swaps}-swap tabu search finds the exact optimum of {hits} of {seeds} and is "
        f"{max(0.0, np.mean(optima) * 100 - mean_eff):.2f} points below it on average.\n"
    )
    checks = [
        f"- Channel permutation, Gaussian {shape[0]}x{shape[1]} 2:4: mean efficacy {mean_eff:.2f}% with max "
        f"{max_s:.2f} s per matrix (target >= 40% within 1 s: "
        f"{'met' if mean_eff >= 40 and max_s <= 1 else 'NOT met'}"
        + ("; unreachable" if np.mean(optima) < 0.4 else "")
        + f": the exact optimum of these matrices averages {100 * np.mean(optima):.2f}% (LP bound "
        f"{100 * np.mean(uppers):.2f}%) and the search reaches it on {hits}/{seeds}; published best 36.6%)"
    ]
    return text, checks


def channel_minilm(quick: bool) -> tuple[str, list[str]]:
    try:
        from nmsolve.datasets import minilm_weights

        weights = minilm_weights(
            r"encoder\.layer\.0\.(attention\.self\.query|intermediate\.dense|output\.dense)\.weight"
        )
    except ImportError as err:  # pragma: no cover - the bench extra is missing
        return f"### MiniLM\n\nskipped: {err}\n", []
    limit = 0.05 if quick else 25.0
    rows, checks = [], []
    worst = 0.0
    for name, w in weights.items():
        if quick:
            w = w[:64, :64]
        for n, m in [(2, 4), (4, 8), (1, 4)]:
            greedy = nmsolve.channel_permutation(w, n, m, method="greedy")
            tabu = nmsolve.channel_permutation(w, n, m, rng=0, max_iter=UNLIMITED, patience=UNLIMITED, time_limit=limit)
            worst = max(worst, tabu.seconds)
            rows.append(
                (
                    name.replace("encoder.layer.0.", "").replace(".weight", ""),
                    f"{w.shape[0]}x{w.shape[1]}",
                    f"{n}:{m}",
                    f"{100 * tabu.kept_before / float(np.abs(w).sum()):.2f}%",
                    f"{100 * greedy.efficacy:.1f}% ({greedy.seconds:.1f} s)",
                    f"{100 * tabu.efficacy:.1f}%",
                    f"{tabu.seconds:.1f}",
                    tabu.iterations,
                )
            )
    header = ("matrix", "shape", "pattern", "kept by plain N:M", "greedy efficacy", "tabu efficacy", "tabu s", "swaps")
    text = (
        f"### MiniLM-L6 layer-0 weights (permuting `in`: 384 and 1536 columns), tabu with a {limit:g} s limit\n\n"
        + markdown_table(header, rows)
        + "\n"
    )
    checks.append(
        f"- Channel permutation on MiniLM (384 and 1536 columns) at 2:4, 4:8, 1:4: every search within "
        f"{worst:.1f} s (target <= 30 s: {'met' if worst <= 30 else 'NOT met'})"
    )
    return text, checks


# --------------------------------------------------------------------------- Bi-Mask


def numpy_bimask_scores(fwd: np.ndarray, perms: np.ndarray, n: int, m: int) -> np.ndarray:
    """The straightforward vectorised scoring, one candidate at a time (as published code does in torch)."""
    rows, cols = fwd.shape
    out = np.empty(len(perms), dtype=np.int64)
    for k, p in enumerate(perms):
        counts = fwd[p].reshape(rows // m, m, cols).sum(axis=1)
        out[k] = np.minimum(counts, n).sum()
    return out


def bimask_speed(quick: bool) -> tuple[str, list[str]]:
    sizes = [256] if quick else [1024, 4096]
    k = 100
    rows, checks = [], []
    for size in sizes:
        w = gaussian_matrix(size, size, seed=size)
        for n, m in [(2, 4), (4, 8)]:
            fwd = nmsolve.magnitude_mask(w, n, m)
            total = median_seconds(lambda: nmsolve.bimask_permutation(w, n, m, candidates=k, rng=0), repeat=5)
            scoring = median_seconds(lambda: nmsolve.bimask_permutation(fwd, n, m, candidates=k, rng=0), repeat=5)
            perms = np.array([np.random.default_rng(i).permutation(size) for i in range(k)])
            tick = time.perf_counter()
            ref = numpy_bimask_scores(fwd, perms, n, m)
            baseline = time.perf_counter() - tick
            ours = nmsolve.bimask_permutation(fwd, n, m, candidates=perms, include_identity=False)
            assert ours.score == ref.max()
            rows.append(
                (
                    f"{size}x{size}",
                    f"{n}:{m}",
                    f"{total * 1e3:.0f}",
                    f"{scoring * 1e3:.0f}",
                    f"{baseline * 1e3:.0f}",
                    f"{baseline / scoring:.0f}x",
                )
            )
            if size == sizes[-1] and (n, m) == (2, 4):
                checks.append(
                    f"- Bi-Mask: {k} candidates on a {size}x{size} layer in {total:.3f} s including F and B "
                    f"(target < 1 s: {'met' if total < 1 else 'NOT met'}); {baseline / scoring:.0f}x faster "
                    "than per-candidate numpy scoring"
                )
    header = (
        "layer",
        "pattern",
        f"bimask_permutation(W), {k} cand. ms",
        "from F (scoring + B) ms",
        "numpy per-candidate scoring ms",
        "speed-up",
    )
    text = (
        f"### Bi-Mask: scoring {k} random candidates (+ identity), float32 Gaussian weights\n\n"
        "`bimask_permutation(W)` includes the forward mask F = N:M(|W|) and the backward mask B of the winner; "
        "the second column starts from F. Medians of 5 runs; the numpy baseline runs once (it is slow).\n\n"
        + markdown_table(header, rows)
        + "\n"
    )
    return text, checks


def bimask_local(quick: bool) -> tuple[str, list[str]]:
    cases: list[tuple[str, str, np.ndarray]] = []
    try:
        from nmsolve.datasets import minilm_weights

        pattern = r"encoder\.layer\.0\..*weight" if quick else None
        weights = minilm_weights(pattern) if pattern else minilm_weights()
        for name, w in weights.items():
            cases.append(("MiniLM", name, w[:64, :64] if quick else w))
    except ImportError:  # pragma: no cover - the bench extra is missing
        pass
    sizes = [64] if quick else [384, 1024, 4096]
    for size in sizes:
        for seed in range(1 if quick else 3):
            cases.append(("Gaussian", f"{size}x{size} seed {seed}", gaussian_matrix(size, size, seed=seed)))
    groups: dict[tuple[str, str], list] = {}
    for source, _name, w in cases:
        tick = time.perf_counter()
        res = nmsolve.bimask_permutation(w, 2, 4, candidates=100, rng=0, local_search=True, max_sweeps=10)
        seconds = time.perf_counter() - tick
        groups.setdefault((source, f"{w.shape[0]}x{w.shape[1]}"), []).append((res, seconds))
    rows, summary = [], {}
    for (source, shape), results in groups.items():
        ident = np.mean([r.identity_score / r.max_score for r, _ in results])
        rand = np.mean([r.random_score / r.max_score for r, _ in results])
        local = np.mean([r.score / r.max_score for r, _ in results])
        beats = sum(r.score > r.random_score for r, _ in results)
        gain_vs_random = np.mean(
            [(r.score - r.random_score) / max(1, r.random_score - r.identity_score) for r, _ in results]
        )
        summary.setdefault(source, [0, 0])
        summary[source][0] += beats
        summary[source][1] += len(results)
        rows.append(
            (
                source,
                shape,
                len(results),
                f"{100 * ident:.2f}%",
                f"{100 * rand:.2f}%",
                f"{100 * local:.2f}%",
                f"+{100 * (local - rand):.2f} pts",
                f"{gain_vs_random:.1f}x",
                f"{beats}/{len(results)}",
                f"{np.mean([s for _, s in results]):.2f}",
            )
        )
    header = (
        "weights",
        "shape",
        "layers",
        "identity score",
        "best of 100 random",
        "+ local search",
        "local search gain",
        "gain / random's gain over identity",
        "beats best random",
        "mean s (total)",
    )
    text = (
        "### Bi-Mask local search (2:4, 100 random candidates + identity, then row swaps between backward blocks)\n\n"
        "Scores are shares of the forward mask's nonzeros that the backward mask keeps (score / max_score); "
        "the local search starts from the best candidate and runs to a local optimum (<= 10 sweeps).\n\n"
        + markdown_table(header, rows)
        + "\n"
    )
    checks = [
        f"- Bi-Mask local search beats the best of 100 random candidates on {source} weights in "
        f"{beats}/{total} matrices (target: beats it on MiniLM and Gaussian: {'met' if beats == total else 'NOT met'})"
        for source, (beats, total) in summary.items()
    ]
    return text, checks


def run(quick: bool = False) -> Path:
    from nmsolve.permutation import bimask, channel

    bimask._warmup()  # compile (or load) the kernels before anything is timed
    channel._warmup()
    parts, checks = [], []
    for section in (channel_gaussian, channel_minilm, bimask_speed, bimask_local):
        text, found = section(quick)
        parts.append(text)
        checks += found
    body = (
        "Ratios and figures come from one run on a shared 2-core machine (other jobs ran at the same time, so "
        "absolute seconds are pessimistic). numba kernels use all cores only in Bi-Mask candidate scoring and B.\n\n"
        + "\n".join(parts)
        + "\n## Targets\n\n"
        + "\n".join(checks)
    )
    return write_result("permutation", "Permutation searches benchmark", body, quick=quick)
