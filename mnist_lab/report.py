"""Rank the runs of a sweep: ``python -m mnist_lab.report DIR [DIR ...]``.

DIR is a multirun directory (every job in it) or a single run directory. Writes
``summary.md``, ``summary.csv`` and ``summary.png`` (accuracy vs training time) into the first
DIR (or ``--out``), and prints the table (:mod:`mnist_lab.evaluation.report`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mnist_lab.evaluation.report import to_markdown, write_report


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lab.report", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "dirs", nargs="+", type=Path, help="multirun directories or run directories"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: the first DIR)"
    )
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        parser.error(
            f"not a directory: {', '.join(missing)} (give a logs/train/multiruns/<time> folder)"
        )
    rows, out = write_report(args.dirs, args.out)
    print(to_markdown(rows), end="")
    print(f"written to {out}/summary.md, summary.csv, summary.png")
    return rows


if __name__ == "__main__":
    main()
