"""The ``--version`` option that every command of the package shares."""

from __future__ import annotations

import argparse

from hvae_pipeline import __version__


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--version`` to a command's top-level parser: it prints ``hvae-pipeline <version>`` and exits 0.

    Args:
        parser: the parser to extend; the version is :data:`hvae_pipeline.__version__`, which the package metadata
            also reads (pyproject's dynamic version), so the two cannot disagree.
    """
    parser.add_argument("--version", action="version", version=f"hvae-pipeline {__version__}",
                        help="print the package version and exit")
