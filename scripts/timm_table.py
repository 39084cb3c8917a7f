"""Print the timm outcome table of docs/timm.md: every model of tests/timm_sweep.py converted
and checked against timm (exact / exact with flagged global context / refused, and why).

Usage (from the repository root, with the timm extra installed)::

    python scripts/timm_table.py            # the default-tier models
    python scripts/timm_table.py --all      # and the slow tier's
    python scripts/timm_table.py resnet10t poolformer_s12
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from timm_sweep import DEFAULT, SLOW, sweep_one, table  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="models (default: the default tier's)")
    parser.add_argument("--all", action="store_true", help="add the slow tier's models")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the global-context warnings are in the table
    models = {**DEFAULT, **SLOW}
    names = args.names or [*DEFAULT, *(SLOW if args.all else ())]
    outcomes = []
    for name in names:
        size, dtype, _ = models.get(name, (64, None, None))
        outcomes.append(sweep_one(name, size, *(dtype,) if dtype else ()))
        print(f"{name}: {outcomes[-1].kind} ({outcomes[-1].seconds:.1f} s)", file=sys.stderr)
    print(table(outcomes))


if __name__ == "__main__":
    main()
