"""`tagger train` argument handling: the CLI's defaults are the job's defaults, and its choices are real."""
from __future__ import annotations

import dataclasses

from jobs.cli import build_parser
from jobs.train_cmd import ARCHS
from models.training.architectures import ARCHITECTURES
from models.training.job import JobArgs


def test_cli_defaults_are_the_job_defaults():
    args = build_parser().parse_args(["train", "--data", "d", "--registry", "r"])
    values = vars(args)
    for field in dataclasses.fields(JobArgs):
        if field.name in ("data", "registry"):
            continue
        assert values[field.name] == field.default, field.name


def test_every_selectable_architecture_exists():
    assert set(ARCHS) == set(ARCHITECTURES)


def test_cli_default_backbone_and_size_are_the_library_defaults():
    from jobs.train_cmd import DEFAULT_ARCH, DEFAULT_IMAGE_SIZE
    from models.training.architectures import DEFAULT_ARCH as LIB_ARCH, DEFAULT_IMAGE_SIZE as LIB_SIZE

    assert (DEFAULT_ARCH, DEFAULT_IMAGE_SIZE) == (LIB_ARCH, LIB_SIZE)
