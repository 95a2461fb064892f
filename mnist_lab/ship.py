"""Rebuild the model that ships with the repo: ``python -m mnist_lab.ship [--preset robust]
[--seed 0]`` (:mod:`mnist_lab.tools.ship`; ``make model`` runs it)."""

from __future__ import annotations

import argparse

from mnist_lab.tools.ship import ship


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mnist_lab.ship", description=__doc__)
    parser.add_argument("--preset", default="robust", help="conf/experiment/<preset>.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="retrain even if a kept run fits")
    args = parser.parse_args(argv)
    card = ship(args.preset, args.seed, fresh=args.fresh)
    print(
        f"wrote {card['out']} ({card['size_bytes'] / 1024:.0f} KiB): {card['recipe']} seed "
        f"{card['seed']}, test acc {card['test/acc']:.4f}, suite mean "
        f"{card['suite_mean_acc']:.4f}, cross-source mean {card['cross_source_mean_acc']:.4f}"
    )


if __name__ == "__main__":
    main()
