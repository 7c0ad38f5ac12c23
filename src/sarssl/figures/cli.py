"""``sarssl plot NAME``: one subcommand per registered figure.

Importing the figure modules registers them (:func:`.registry.register_figure`); the
command builds the figure under the house style and writes it as PNG + vector PDF.
"""

from __future__ import annotations

import argparse

from . import (  # noqa: F401  (importing a figure module registers its figures)
    attention,
    composites,
    curves,
    datastats,
    embeddings,
    pretraining,
    qa,
    qualitative,
    reconstruction,
    training,
)
from .registry import DPI, FIGURES, publication_style, save_figure


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    for spec in FIGURES.values():
        text = spec.help.replace("%", "%%")  # argparse %-formats help strings
        p = sub.add_parser(spec.name, help=text, description=text)
        p.add_argument(
            "--out",
            required=True,
            help="output PNG (a vector PDF with the same stem is written beside it)",
        )
        p.add_argument("--dpi", type=int, default=DPI, help="PNG resolution (default 300)")
        spec.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    spec = FIGURES[args.figure]
    with publication_style():
        fig = spec.build(args)
    save_figure(fig, args.out, dpi=args.dpi)
    return 0
