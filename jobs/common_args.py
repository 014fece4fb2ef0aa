"""Arguments shared by several subcommands, defined once."""
from __future__ import annotations

import argparse

from models.registry import ENV_VAR, default_root


def add_registry_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        default=None,
        help=f"model registry root (local path or gs://, s3://...); default ${ENV_VAR}, "
        f"else ~/.local/share/tagger/registry",
    )


def add_precision_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "int8"), default="auto",
        help="which model file runs: auto = the INT8 variant on a CPU when the version has one (and it is "
        "faster here), FP32 on a GPU; fp32; int8 (fails if the version has none)",
    )


def registry_root(args: argparse.Namespace) -> str:
    return args.registry or default_root()
