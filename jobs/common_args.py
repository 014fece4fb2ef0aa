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


def registry_root(args: argparse.Namespace) -> str:
    return args.registry or default_root()
