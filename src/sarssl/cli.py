"""The ``sarssl`` command line: one subcommand per workflow stage.

Every stage module exposes ``add_arguments(parser)`` and ``run(args) -> int``; this file
only wires them together, so ``sarssl STAGE --help`` documents each stage where it lives.
Modules are imported lazily so that ``sarssl --help`` stays fast (no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading

from . import __version__
from .errors import SarsslError, Terminated

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "acquire": (
        "sarssl.acquire.cli",
        "download real inputs: Sentinel-1 GRD, orbit files, DEM, WorldCover, MOD44B",
    ),
    "plan": (
        "sarssl.acquire.plan",
        "products, gigabytes, jobs and declared GPU-hours of a config, before running it",
    ),
    "simulate": (
        "sarssl.demo.simulate",
        "synthesise demo Sentinel-1 GRD products with known truth",
    ),
    "catalogue": (
        "sarssl.catalogue.cli",
        "list and filter Sentinel-1 products into a scene catalogue",
    ),
    "preprocess": (
        "sarssl.sar.preprocess",
        "raw GRD product -> calibrated, terrain-corrected GeoTIFF",
    ),
    "composite": (
        "sarssl.data.composite",
        "seasonal 12-channel composites from preprocessed scenes",
    ),
    "chips": ("sarssl.data.chips", "cut composites into labelled chips with spatial splits"),
    "stats": ("sarssl.data.chips", "per-channel normalisation statistics from training chips"),
    "fractions": (
        "sarssl.data.chips",
        "nested label-fraction subsets of a chip store's training ids",
    ),
    "pretrain": ("sarssl.selfsup.pretrain", "self-supervised pretraining (MAE or DINO)"),
    "finetune": (
        "sarssl.downstream.finetune",
        "fine-tune / linear-probe on a task at a label fraction",
    ),
    "tables": ("sarssl.downstream.tables", "collect fine-tuning metrics into tidy tables"),
    "plot": ("sarssl.figures.cli", "figures (learning curves and more)"),
    "slurm-check": (
        "sarssl.slurm_check",
        "list the SLURM profile's requests that no partition can satisfy (from sinfo)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sarssl",
        description=(
            "Reproducible self-supervised learning on Sentinel-1 SAR: every stage of the "
            "Snakemake workflow as a command you can also run by hand."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sarssl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the global options and the command name first; the command's own parser
    # (built by its module) parses the rest.
    top, rest = parser.parse_known_args(argv)
    if top.command is None:
        parser.print_help()
        return 0
    module_name, help_text = COMMANDS[top.command]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"sarssl {top.command}", description=help_text)
    if top.command in ("stats", "fractions"):  # second commands of sarssl.data.chips
        getattr(module, f"add_{top.command}_arguments")(sub)
        runner = getattr(module, f"run_{top.command}")
    else:
        module.add_arguments(sub)
        runner = module.run
    args = sub.parse_args(rest)
    logging.basicConfig(
        level=logging.DEBUG if top.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # SIGTERM unwinds like an exception: atomic writers and temporary files are cleaned up
    # (training installs its own handler on top, which checkpoints first)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return int(runner(args) or 0)
    except SarsslError as exc:
        print(f"sarssl {top.command}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print(
            f"sarssl {top.command}: terminated (SIGTERM); partial outputs removed", file=sys.stderr
        )
        return 128 + signal.SIGTERM
    except OSError as exc:
        from .io import is_no_space

        if not is_no_space(exc):
            raise  # anything else is a bug worth its traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"sarssl {top.command}: error: {where}no space left on device ({exc.strerror}); "
            "partial outputs removed",
            file=sys.stderr,
        )
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
