"""Leftover command-line options must be real Beam pipeline options, checked before anything runs.

Beam itself only logs "Discarding unparseable args" and carries on, so a typo such as ``--incremantal`` used
to re-tag a whole archive. Here every option the subcommand did not define is parsed against every
registered ``PipelineOptions`` subclass (Beam's own, and the runner's, e.g. Dask's ``--dask_client_address``
once its runner module is importable); anything left over is a one-line error naming the closest option of
ours or Beam's. Runner names are checked too.
"""
from __future__ import annotations

import argparse
import importlib
import logging
from typing import Iterable, Sequence

from jobs.common_args import did_you_mean
from schemas.errors import UserError

# Runner modules whose PipelineOptions subclasses are not imported by apache_beam itself.
_OPTIONAL_OPTION_MODULES = ("apache_beam.runners.dask.dask_runner",)


class BeamOptionError(UserError):
    """An option neither the subcommand nor Beam knows, or a Beam option with a bad value."""


def _all_subclasses(cls) -> list[type]:
    found, stack = {}, [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if str(sub) not in found:
                found[str(sub)] = sub
                stack.append(sub)
    return list(found.values())


def _import_runner_modules(args: Sequence[str]) -> None:
    """Importing a runner's module registers its options class; missing optional dependencies are fine."""
    for module in _OPTIONAL_OPTION_MODULES:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - its dependency is not installed: its options stay unknown
            logging.getLogger(__name__).debug("%s not importable", module)
    runner = runner_name(args)
    if runner and "." in runner:
        module, _, cls = runner.rpartition(".")
        try:
            found = getattr(importlib.import_module(module), cls, None)
        except Exception as exc:  # noqa: BLE001 - any import failure is the user's runner name
            raise BeamOptionError(f"--runner {runner}: cannot import {module} ({type(exc).__name__}: {exc})") from None
        if found is None:
            raise BeamOptionError(f"--runner {runner}: {module} has no {cls}")


def runner_name(args: Sequence[str]) -> str | None:
    runner = None
    for i, arg in enumerate(args):
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(args):
            runner = args[i + 1]
    return runner


def check_runner(runner: str | None) -> None:
    """Short names Beam knows (case-insensitive, "Runner" suffix optional) or a dotted class path."""
    if not runner or "." in runner:
        return
    from apache_beam.options.pipeline_options import StandardOptions

    from pipelines import runner_names

    known = [*StandardOptions.KNOWN_RUNNER_NAMES, *getattr(runner_names, "DASK_RUNNERS", ())[:1]]
    lowered = {name.lower() for name in known}
    if runner.lower() in lowered or runner.lower() + "runner" in lowered:
        return
    close = did_you_mean(runner, known)
    raise BeamOptionError(f"--runner={runner} is not a Beam runner{close} (known: {', '.join(known)}, or a "
                          "module.path.RunnerClass)")


def check_beam_args(args: Sequence[str], own_options: Iterable[str]) -> None:
    """Raise :class:`BeamOptionError` unless every entry of ``args`` parses as a Beam pipeline option."""
    if not args:
        return
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    _import_runner_modules(args)

    class _Parser(_BeamArgumentParser):
        def error(self, message):  # Beam's parser exits with a usage block; we want one line
            raise BeamOptionError(f"Beam option: {message}")

    parser = _Parser(allow_abbrev=False, add_help=False)
    for cls in _all_subclasses(PipelineOptions):
        try:
            cls._add_argparse_args(parser)  # pylint: disable=protected-access
        except argparse.ArgumentError:
            continue  # two classes defining one option (a subclass re-registering): the first one wins
    _, unknown = parser.parse_known_args(list(args))
    for arg in unknown:
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            beam = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
            hint = did_you_mean(name, [*own_options, *beam])
            raise BeamOptionError(f"unknown option {name}{hint}; options that are not tagger's must be Beam "
                                  "pipeline options")
        raise BeamOptionError(f"unexpected argument {arg!r}")
    check_runner(runner_name(args))
