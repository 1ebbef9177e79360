"""Run benchmarks: ``python -m bench`` (all) or ``python -m bench nm_mask transposable``.

Each benchmark is a module ``bench/bench_NAME.py`` with ``run(quick: bool) -> Path`` that measures,
writes ``bench/results/NAME.md`` and returns its path. ``--quick`` runs tiny sizes (the test suite
smoke-runs every benchmark this way; quick results are written under bench/results/quick/).
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {available()})")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {available()}")
    for name in names:
        path = importlib.import_module(f"bench.bench_{name}").run(quick=args.quick)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
