"""Plot the loss curves of consecutive training runs (e.g. the two stages of the bundled model) as one curve.

    python training/plot_stages.py OUT.png runs/cpu-128-warmup/logs/metrics.csv runs/cpu-128/logs/metrics.csv

Each run's steps continue from the last step of the previous one (a run started with ``training.init_from``
counts its own steps from 0).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from hvae_pipeline.training.run_log import plot_loss_curve


def chained_rows(logs: list[Path]) -> list[dict[str, str]]:
    """The rows of ``logs`` in order, each log's steps shifted by the last step of the previous logs."""
    rows: list[dict[str, str]] = []
    offset = 0
    for log in logs:
        if not log.is_file():
            raise FileNotFoundError(f"{log}: no such training log (expected a run's logs/metrics.csv)")
        with log.open(newline="") as handle:
            run_rows = list(csv.DictReader(handle))
        rows += [{**row, "step": str(int(row["step"]) + offset)} for row in run_rows]
        offset += max((int(row["step"]) for row in run_rows), default=0)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("logs", type=Path, nargs="+", help="metrics.csv files, in training order")
    args = parser.parse_args(argv)
    try:
        rows = chained_rows(args.logs)
    except FileNotFoundError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    plot_loss_curve(rows, args.out)
    print(f"Wrote {args.out} ({len(rows)} logged steps from {len(args.logs)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
