"""The ``gremln`` command. Its subcommands (prepare, train, embed, evaluate) come with the gremln
data, model and evaluation work; for now it only reports that."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gremln`` console script."""
    parser = argparse.ArgumentParser(
        prog="gremln",
        description="GREmLN, a graph-aware transcriptomics foundation model. Not implemented yet: "
        "this release has the netinfer ARACNe core only (see README, 'Status').",
    )
    parser.parse_args(argv)
    parser.print_help()
    return 1


if __name__ == "__main__":
    sys.exit(main())
