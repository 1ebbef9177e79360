"""Run benchmarks: ``python -m bench`` (all) or ``python -m bench nm_mask transposable``.

Each benchmark is a module ``bench/bench_NAME.py`` with ``run(quick: bool) -> Path`` that measures,
writes ``bench/results/NAME.md`` and returns its path. ``--quick`` runs tiny sizes (the test suite
smoke-runs every benchmark this way; quick results are written under bench/results/quick/).

After a full run the README's results table is regenerated from bench/results/*.md (see
bench/_readme.py); ``python -m bench readme`` only regenerates it, from the committed results.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(m.name[len("bench_") :] for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))


def update_readme() -> int:
    """Regenerate the README's results table from bench/results/*.md; 1 if a results file cannot be read."""
    from bench import _readme

    try:
        changed = _readme.update()
    except (_readme.LayoutError, OSError) as err:
        print(f"README.md not updated: {err}", file=sys.stderr)
        return 1
    print(f"{'updated' if changed else 'unchanged:'} {_readme.README.name} results table")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {available()}), or 'readme' to run none"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests (README left alone)")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()) - {"readme"})
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {available()} or 'readme'")
    for name in names:
        if name != "readme":
            path = importlib.import_module(f"bench.bench_{name}").run(quick=args.quick)
            print(f"wrote {path}")
    return 0 if args.quick else update_readme()


if __name__ == "__main__":
    sys.exit(main())
