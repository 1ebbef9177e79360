"""The ``nmsolve`` command line (also ``python -m nmsolve``).

The top layer: argument parsing, printing and exit codes. Each subcommand is one entry of
:data:`COMMANDS` (name -> (help, add_arguments, run)); ``prune`` and ``report`` call the library in
:mod:`nmsolve.checkpoint`, which is imported only inside their functions, and :func:`main` adds a
command's arguments only when that command is named, so ``nmsolve --help`` never imports numba.
Library errors a user can fix (missing file, bad pattern, unknown method...) become :class:`CliError`:
one line on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: raised in the main thread so that temporary files are removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP raise :class:`Terminated` (the usual handlers come back after)."""

    def handler(signum: int, frame: Any) -> None:
        for other in previous:  # a second signal must not interrupt the clean-up the first one starts
            signal.signal(other, signal.SIG_IGN)
        raise Terminated(signum)

    previous: dict[int, Any] = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:  # pragma: no cover - Windows has no SIGHUP
            continue
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread: leave signals alone
            break
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


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


# --------------------------------------------------------------------------- prune, report


def _add_selection_arguments(parser: argparse.ArgumentParser) -> None:
    from nmsolve.checkpoint import DEFAULT_EXCLUDE

    parser.add_argument("--n", type=int, default=2, help="keep n of every m (default 2)")
    parser.add_argument("--m", type=int, default=4, help="group size m (default 4)")
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="REGEX",
        help="only tensors whose name matches (re.search; repeatable; default: every float tensor of 2+ dims)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=None,
        metavar="REGEX",
        help=f"skip tensors whose name matches (repeatable; default {list(DEFAULT_EXCLUDE)}, embedding tables; "
        "any --exclude replaces the default, --exclude '$^' excludes nothing)",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``nmsolve prune``."""
    from nmsolve.checkpoint import MASK_METHODS

    parser.add_argument(
        "input",
        metavar="IN",
        help="checkpoint to read (.safetensors, .npz, .pt/.pth/.bin), or a sharded one: its "
        "model.safetensors.index.json or the folder holding it",
    )
    parser.add_argument(
        "output",
        metavar="OUT",
        help="pruned checkpoint to write (format from its extension); for a sharded IN, a folder name gets "
        "the same shards, the index and (IN a folder) its other files",
    )
    by_description: dict[str, list[str]] = {}
    for name, entry in MASK_METHODS.items():
        by_description.setdefault(entry.description, []).append(name)
    methods = "; ".join(f"{', '.join(names)}: {text}" for text, names in by_description.items())
    parser.add_argument("--method", default="nm", help=f"how to choose the mask (default nm). {methods}")
    parser.add_argument("--masks", metavar="FILE", help="also write the boolean masks (.safetensors or .npz)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT (and FILE) if they exist")
    _add_selection_arguments(parser)


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``nmsolve report``."""
    from nmsolve.checkpoint import DEFAULT_REPORT_METHODS

    parser.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="checkpoint to inspect (a file, or a sharded index or its folder)"
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"comma-separated methods to measure (default: {','.join(DEFAULT_REPORT_METHODS)}; "
        "any method of nmsolve prune --method)",
    )
    _add_selection_arguments(parser)


def _show_progress(args: argparse.Namespace) -> bool:
    """``--progress`` / ``--no-progress``, or a bar exactly when stderr is a terminal."""
    return bool(sys.stderr.isatty()) if args.progress is None else bool(args.progress)


def _cli_call(fn: Callable[[], Any]) -> Any:
    """Run a library call, turning the errors a user can fix into :class:`CliError`."""
    try:
        return fn()
    except (FileNotFoundError, ValueError) as err:  # CheckpointError is a ValueError
        raise CliError(str(err)) from None
    except (PermissionError, IsADirectoryError, OSError) as err:
        raise CliError(f"{type(err).__name__}: {err}") from None


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def run_prune(args: argparse.Namespace) -> int:
    """``nmsolve prune IN OUT ...``: prune, write, print a per-layer table and totals."""
    from nmsolve.checkpoint import DEFAULT_EXCLUDE, PruneResult, prune_checkpoint

    exclude = DEFAULT_EXCLUDE if args.exclude is None else tuple(args.exclude)
    result: PruneResult = _cli_call(
        lambda: prune_checkpoint(
            args.input,
            args.output,
            n=args.n,
            m=args.m,
            method=args.method,
            include=tuple(args.include),
            exclude=exclude,
            masks=args.masks,
            overwrite=args.overwrite,
            progress=_show_progress(args),
        )
    )
    rows = [
        (layer.name, _shape(layer.shape), layer.pattern, f"{layer.kept_fraction:.4f}", f"{layer.seconds * 1e3:.1f}")
        for layer in result.layers
    ]
    print_table(("tensor", "shape", "pattern", "kept |W|", "ms"), rows)
    mask_seconds = sum(layer.seconds for layer in result.layers)
    print(
        f"\n{len(result.layers)} tensors pruned ({result.pruned_parameters:,} weights) with method {result.method!r}, "
        f"{result.copied} copied unchanged; kept |W| overall {result.kept_fraction:.4f}; "
        f"masks {mask_seconds:.2f} s, total {result.seconds:.2f} s"
    )
    print(f"wrote {result.destination}" + (f" and masks {result.masks}" if result.masks else ""))
    if result.files_copied:
        print(f"copied {', '.join(result.files_copied)}")
    if result.files_not_copied:
        print(f"note: not copied (weights or sub-folders): {', '.join(result.files_not_copied)}")
    if result.not_written:
        names = ", ".join(result.not_written[:10]) + (", ..." if len(result.not_written) > 10 else "")
        print(
            f"note: {len(result.not_written)} entries of {args.input} are not tensors and were not written to "
            f"{result.destination.name} (a .pt output keeps them): {names}"
        )
    if not result.layers:
        print("note: no tensor matched the selection (float, 2+ dims, --include/--exclude); output equals input")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """``nmsolve report CHECKPOINT ...``: distance from N:M / transposable N:M and kept |W| per method."""
    from nmsolve.checkpoint import DEFAULT_EXCLUDE, CheckpointReport, checkpoint_report

    exclude = DEFAULT_EXCLUDE if args.exclude is None else tuple(args.exclude)
    methods = None if args.methods is None else [s.strip() for s in args.methods.split(",") if s.strip()]
    report: CheckpointReport = _cli_call(
        lambda: checkpoint_report(
            args.checkpoint,
            n=args.n,
            m=args.m,
            methods=methods,
            include=tuple(args.include),
            exclude=exclude,
            progress=_show_progress(args),
        )
    )
    pattern = f"{report.n}:{report.m}"

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    header = ["tensor", "shape", "nonzero", f"groups not {pattern}", f"tiles not {pattern} T"]
    header += [f"kept {name}" for name in report.methods]
    rows = []
    for layer in report.layers:
        row = [layer.name, _shape(layer.shape), pct(layer.density), pct(layer.nm_violations)]
        row.append(pct(layer.transposable_violations))
        row += ["n/a" if layer.kept[name] is None else f"{layer.kept[name]:.4f}" for name in report.methods]
        rows.append(row)
    total = sum(layer.magnitude for layer in report.layers)
    if report.layers:
        summary = ["all (|W|-weighted)", "", "", "", ""]
        for name in report.methods:
            parts = [(layer.kept[name], layer.magnitude) for layer in report.layers]
            if any(k is None for k, _ in parts) or not total:
                summary.append("n/a")
            else:
                summary.append(f"{sum(k * w for k, w in parts if k is not None) / total:.4f}")
        rows.append(summary)
    print_table(header, rows)
    print(
        f"\ngroups not {pattern}: share of groups of {report.m} (along input channels) holding more than "
        f"{report.n} nonzeros (0% = already {pattern}); tiles not {pattern} T: share of {report.m}x{report.m} tiles "
        "that break the transposable pattern; kept: fraction of sum|W| each method keeps."
    )
    for name, why in report.skipped:
        print(f"skipped {name}: {why}")
    return 0


def add_prune_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``nmsolve prune-model``."""
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="Hugging Face model folder (config.json, weights, tokenizer)"
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write: a copy of MODEL_DIR with pruned weights")
    parser.add_argument(
        "--calibration", required=True, metavar="TEXT_FILE", help="UTF-8 text, one sentence or paragraph per line"
    )
    parser.add_argument("--n", type=int, default=2, help="keep n of every m (default 2)")
    parser.add_argument("--m", type=int, default=4, help="group size m (default 4)")
    parser.add_argument(
        "--method",
        choices=["sparsegpt", "wanda", "magnitude"],
        default="sparsegpt",
        help="mask selection (default sparsegpt: with error compensation)",
    )
    parser.add_argument("--structure", choices=["nm", "transposable"], default="nm", help="N:M, or N:M both ways")
    parser.add_argument(
        "--refine",
        nargs="?",
        const=True,
        default=False,
        type=int,
        metavar="SWEEPS",
        help="improve each mask by swaps on the exact error (slower); with SWEEPS, at most that many passes",
    )
    parser.add_argument("--samples", type=int, default=128, help="calibration lines to use (default 128)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per line at most (default 128)")
    parser.add_argument("--batch-size", type=int, default=16, help="lines per calibration batch (default 16)")
    parser.add_argument(
        "--include",
        action="append",
        default=None,
        metavar="GLOB",
        help="only Linear layers whose module name matches (fnmatch glob, e.g. '*.intermediate.dense'; repeatable)",
    )
    parser.add_argument(
        "--exclude", action="append", default=None, metavar="GLOB", help="skip Linear layers that match (repeatable)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show a bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")


def run_prune_model(args: argparse.Namespace) -> int:
    """``nmsolve prune-model MODEL_DIR OUT_DIR --calibration FILE ...``: prune, write, print the table."""
    try:
        from nmsolve.torch.model_folder import ModelPruneResult, prune_model_folder
    except ImportError as err:
        raise CliError(
            f"prune-model needs torch and transformers ({err}); "
            "install them, e.g. pip install nmsolve[torch] transformers"
        ) from None

    result: ModelPruneResult = _cli_call(
        lambda: prune_model_folder(
            args.model_dir,
            args.out_dir,
            args.calibration,
            args.n,
            args.m,
            method=args.method,
            structure=args.structure,
            refine=args.refine,
            samples=args.samples,
            max_length=args.max_length,
            batch_size=args.batch_size,
            include=args.include,
            exclude=args.exclude,
            overwrite=args.overwrite,
            progress=_show_progress(args),
        )
    )
    print(result.report)
    print(
        f"\ncalibration: {result.samples} lines, {result.tokens:,} tokens; total {result.seconds:.2f} s"
        f"\nwrote {result.destination} ({', '.join(result.weight_files)}, nmsolve_sparsity.json: "
        f"{len((result.sparsity or {}).get('layers', []))} layers N:M in stored order, n counts kept weights)"
    )
    if result.files_copied:
        print(f"copied {', '.join(result.files_copied)}")
    if result.files_not_copied:
        print(
            "note: not copied (the input's weights, or exports of the dense model): "
            + ", ".join(result.files_not_copied)
        )
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


COMMANDS: dict[str, Command] = {
    "demo": ("compute N:M masks for a built-in real weight matrix and print a report", _add_demo_arguments, _run_demo),
    "prune": (
        "prune a checkpoint (.safetensors, .npz, .pt) to N:M or transposable N:M and write a new one",
        add_prune_arguments,
        run_prune,
    ),
    "prune-model": (
        "prune a Hugging Face model folder to N:M on calibration text (SparseGPT-style, block by block)",
        add_prune_model_arguments,
        run_prune_model,
    ),
    "report": (
        "how far each tensor of a checkpoint is from N:M / transposable N:M, and what each method keeps",
        add_report_arguments,
        run_report,
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nmsolve`` command."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="nmsolve", description="Combinatorial solvers for N:M sparsity masks.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    try:
        for name, (help_text, add_arguments, _) in COMMANDS.items():
            command = sub.add_parser(name, help=help_text, description=help_text)
            if name in words:  # only a command that can run needs its arguments (and the imports behind them)
                add_arguments(command)
    except KeyboardInterrupt:  # Ctrl-C while the imports load: nothing started yet
        print("nmsolve: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(words)
    try:
        with _terminate_cleanly():
            return COMMANDS[args.command][2](args)
    except CliError as err:
        print(f"nmsolve {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nmsolve {args.command}: interrupted (outputs are complete or absent, never partial)", file=sys.stderr)
        return 130
    except Terminated as stop:
        name = signal.Signals(stop.signum).name
        print(
            f"nmsolve {args.command}: stopped by {name} (outputs are complete or absent, never partial)",
            file=sys.stderr,
        )
        return 128 + stop.signum


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
