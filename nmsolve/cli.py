"""The ``nmsolve`` command line (also ``python -m nmsolve``).

Subcommands register themselves in :data:`COMMANDS` (name -> (help, add_arguments, run)), so each
feature keeps its own arguments next to its code.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


# --------------------------------------------------------------------------- demo


def demo_methods(n: int, m: int) -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """The (label, weights -> mask) pairs the demo compares; solvers add themselves here."""
    import nmsolve

    methods = [(f"nm {n}:{m} (magnitude)", lambda w: nmsolve.magnitude_mask(w, n, m))]
    if n < m:  # transposable: N:M along rows and columns (the demo checks it with is_nm along rows)
        methods += [
            ("transposable mcf", lambda w: nmsolve.transposable_mask(w, n, m, pad=True)),
            ("transposable approx", lambda w: nmsolve.transposable_mask(w, n, m, method="approx", pad=True)),
        ]
    return methods


def _demo_matrices(source: str) -> dict[str, np.ndarray]:
    from nmsolve import datasets

    if source == "gaussian":
        return {"gaussian 1536x384 (seed 0)": datasets.gaussian_matrix(1536, 384, seed=0)}
    try:
        weights = datasets.minilm_weights(r"encoder\.layer\.0\..*(query|intermediate\.dense|output\.dense)\.weight")
    except ImportError as err:
        if source == "minilm":
            raise CliError(str(err)) from None
        print(f"note: {err}; using a Gaussian matrix instead\n")
        return _demo_matrices("gaussian")
    return {f"MiniLM {name}": w for name, w in weights.items()}


def _add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=2, help="keep n of every m (default 2)")
    parser.add_argument("--m", type=int, default=4, help="group size m (default 4)")
    parser.add_argument(
        "--source",
        choices=["auto", "minilm", "gaussian"],
        default="auto",
        help="weights: the packaged MiniLM model (auto falls back to Gaussian if it is missing)",
    )


def _run_demo(args: argparse.Namespace) -> int:
    import nmsolve

    try:
        nmsolve.nm_mask(np.zeros((1, args.m)), args.n, args.m)  # validates n, m with the library's message
    except (TypeError, ValueError) as err:
        raise CliError(str(err)) from None
    print(f"nmsolve {nmsolve.__version__} demo: N:M masks for real weights, pattern {args.n}:{args.m}\n")
    nmsolve.warmup()
    rows = []
    for label, weights in _demo_matrices(args.source).items():
        for method, solve in demo_methods(args.n, args.m):
            start = time.perf_counter()
            mask = solve(weights)
            seconds = time.perf_counter() - start
            rows.append(
                (
                    label,
                    f"{weights.shape[0]}x{weights.shape[1]}",
                    method,
                    f"{nmsolve.kept_fraction(weights, mask):.4f}",
                    f"{mask.mean():.3f}",
                    "yes" if nmsolve.is_nm(mask, args.n, args.m, exact=True) else "NO",
                    f"{seconds * 1e3:.2f}",
                )
            )
    print_table(("matrix", "shape", "method", "kept |W|", "density", "valid", "ms"), rows)
    print("\nkept |W|: fraction of the total weight magnitude the mask keeps (higher is better).")
    return 0


# --------------------------------------------------------------------------- shared pieces


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], file: Any = None) -> None:
    """Print a plain aligned text table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=file)
        if k == 0:
            print("  ".join("-" * w for w in widths), file=file)


def _from_checkpoint(attr: str) -> Callable[[Any], Any]:
    """A function of nmsolve.checkpoint, imported on first call (keeps ``nmsolve --help`` light)."""

    def call(arg: Any) -> Any:
        from nmsolve import checkpoint

        return getattr(checkpoint, attr)(arg)

    return call


COMMANDS: dict[str, Command] = {
    "demo": ("compute N:M masks for a built-in real weight matrix and print a report", _add_demo_arguments, _run_demo),
    "prune": (
        "prune a checkpoint (.safetensors, .npz, .pt) to N:M or transposable N:M and write a new one",
        _from_checkpoint("add_prune_arguments"),
        _from_checkpoint("run_prune"),
    ),
    "report": (
        "how far each tensor of a checkpoint is from N:M / transposable N:M, and what each method keeps",
        _from_checkpoint("add_report_arguments"),
        _from_checkpoint("run_report"),
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nmsolve`` command."""
    parser = argparse.ArgumentParser(prog="nmsolve", description="Combinatorial solvers for N:M sparsity masks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except CliError as err:
        print(f"nmsolve {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
