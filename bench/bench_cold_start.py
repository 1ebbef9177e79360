"""First call of each solver in a fresh process: with an empty numba cache, and with a warm one.

Every process that cannot use the on-disk cache (a read-only install without a user cache, or
``NMSOLVE_NUMBA_CACHE=0``) pays compilation on its first call, and every new install pays it once per
pattern and dtype. Targets (issue 12): at most 3 s for the first call of any one solver at one pattern
and dtype with an empty cache, at most 0.3 s for ``import nmsolve`` plus the first call with a warm
cache. Each row runs in its own Python process; the time is measured inside it, from just before
``import nmsolve`` (so the interpreter's own start-up is not counted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import markdown_table, write_result

ROOT = Path(__file__).resolve().parents[1]
COLD_TARGET = 3.0
WARM_TARGET = 0.3

SETUP = "import numpy as np; W = np.random.default_rng(0).normal(size=({rows}, {cols})).astype(np.{dtype})"

# (label, statement, shape, dtype); every statement is one public call at one pattern and dtype
CASES = [
    ("nm_mask 2:4", "nmsolve.nm_mask(W, 2, 4)", (64, 64), "float32"),
    ("nm_mask 4:8", "nmsolve.nm_mask(W, 4, 8)", (64, 64), "float32"),
    ("nm_mask 8:16", "nmsolve.nm_mask(W, 8, 16)", (64, 64), "float32"),
    ("nm_mask 16:32", "nmsolve.nm_mask(W, 16, 32)", (64, 64), "float32"),
    ("nm_mask 2:4 float64", "nmsolve.nm_mask(W, 2, 4)", (64, 64), "float64"),
    ("nm_mask 2:4 axis=0", "nmsolve.nm_mask(W, 2, 4, axis=0)", (64, 64), "float32"),
    ("nm_mask 2:4, 1024x1024 (parallel kernel)", "nmsolve.nm_mask(W, 2, 4)", (1024, 1024), "float32"),
    ("nm_mask 16:32, 1024x1024 (register network)", "nmsolve.nm_mask(W, 16, 32)", (1024, 1024), "float32"),
    ("transposable_mask mcf 2:4", "nmsolve.transposable_mask(W, 2, 4)", (64, 64), "float32"),
    ("transposable_mask mcf 4:8", "nmsolve.transposable_mask(W, 4, 8)", (64, 64), "float32"),
    ("transposable_mask approx 2:4", "nmsolve.transposable_mask(W, 2, 4, method='approx')", (64, 64), "float32"),
    ("transposable_mask approx 4:8", "nmsolve.transposable_mask(W, 4, 8, method='approx')", (64, 64), "float32"),
    ("fanin_mask k=16", "nmsolve.fanin_mask(np.abs(W), 16)", (64, 64), "float32"),
    ("bimask_masks 2:4", "nmsolve.bimask_masks(W, 2, 4, np.arange(64))", (64, 64), "float32"),
    ("channel_permutation 2:4", "nmsolve.channel_permutation(W, 2, 4)", (64, 64), "float32"),
    ("unstructured_to_nm m=4", "nmsolve.unstructured_to_nm(W, np.abs(W) > 1, m=4)", (64, 64), "float32"),
]


def first_call_seconds(statement: str, shape: tuple[int, int], dtype: str, env: dict[str, str]) -> float:
    """Seconds from ``import nmsolve`` to the end of the first ``statement`` in a fresh process."""
    code = (
        SETUP.format(rows=shape[0], cols=shape[1], dtype=dtype)
        + "\nimport json, time\nstart = time.perf_counter()\nimport nmsolve\n"
        + statement
        + "\nprint(json.dumps(time.perf_counter() - start))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"{statement} failed:\n{result.stderr[-2000:]}")
    return float(json.loads(result.stdout.strip().splitlines()[-1]))


FLOOR_KERNEL = """import numba


@numba.njit(cache=True)
def total(x):
    s = 0.0
    for v in x:
        s += v
    return s
"""


def numba_floor_seconds() -> float:
    """Import + first call of a one-loop cached kernel (warm cache): what numba costs any package."""
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "floor_kernel.py").write_text(FLOOR_KERNEL)
        code = (
            f"import sys, json, time\nimport numpy as np\nsys.path.insert(0, {folder!r})\n"
            "start = time.perf_counter()\nimport floor_kernel\nfloor_kernel.total(np.ones(4))\n"
            "print(json.dumps(time.perf_counter() - start))"
        )
        times = []
        for _ in range(3):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            times.append(float(json.loads(out.strip().splitlines()[-1])))
        return min(times[1:])


def run(quick: bool = False) -> Path:
    cases = CASES[:2] if quick else CASES
    load_before = os.getloadavg()
    rows = []
    misses = []
    for label, statement, shape, dtype in cases:
        cold = first_call_seconds(statement, shape, dtype, {"NMSOLVE_NUMBA_CACHE": "0"})
        with tempfile.TemporaryDirectory() as cache:
            env = {"NUMBA_CACHE_DIR": cache}
            first_call_seconds(statement, shape, dtype, env)  # fills the cache
            warm = min(first_call_seconds(statement, shape, dtype, env) for _ in range(2))
        shape_text = f"{shape[0]}x{shape[1]} {dtype}"
        rows.append((label, shape_text, f"{cold:.2f}", f"{warm:.3f}"))
        if cold > COLD_TARGET:
            misses.append(f"{label}: {cold:.2f} s with an empty cache (target {COLD_TARGET} s)")
        if warm > WARM_TARGET:
            misses.append(f"{label}: {warm:.3f} s with a warm cache (target {WARM_TARGET} s)")
    floor = numba_floor_seconds()
    load_after = os.getloadavg()
    verdict = (
        "All rows meet the targets." if not misses else "Rows over target:\n\n" + "\n".join(f"- {m}" for m in misses)
    )
    body = (
        f"{__doc__.split(chr(10), 1)[1].strip()}\n\n"
        "`empty cache`: `NMSOLVE_NUMBA_CACHE=0`, so everything the call needs is compiled. `warm cache`: the "
        "best of two processes after one that filled a fresh `NUMBA_CACHE_DIR`.\n\n"
        + markdown_table(("call", "input", "empty cache s", "warm cache s (import included)"), rows)
        + f"\n\n{verdict}\n\n"
        f"For scale: importing numba and calling a one-loop kernel from a warm cache takes {floor:.3f} s here "
        "(numba's first call imports its BLAS bindings, hence scipy.linalg), whatever package the kernel is in.\n\n"
        f"Load average (1, 5, 15 min) on this shared 2-core machine: {', '.join(f'{v:.1f}' for v in load_before)} "
        f"before the run, {', '.join(f'{v:.1f}' for v in load_after)} after it."
    )
    return write_result("cold_start", "First call: empty and warm numba cache", body, quick=quick)
