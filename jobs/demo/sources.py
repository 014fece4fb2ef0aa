"""Where the demo's real images come from: apt and PyPI packages only, installed on demand.

* Debian's ``dataset-fashion-mnist`` ships Fashion-MNIST as gzipped IDX files (70,000 28x28 greyscale garments in
  ten classes). Those become the labelled objects of the demo mosaics.
* scikit-image's wheel bundles a few dozen sample photos (astronaut, cat, coffee, rocket, ...) that need no
  download. They serve as real-photo backgrounds and as unlabelled real photos in the archive.
"""
from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

from schemas.errors import UserError

log = logging.getLogger(__name__)

FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_DIR_ENV = "TAGGER_FASHION_MNIST_DIR"
FASHION_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
# Tag names for Fashion-MNIST labels 0..9, in label order (plain identifiers so SQL and CSVs stay simple).
FASHION_CLASSES = (
    "tshirt_top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle_boot",
)
FASHION_SPLITS = {"train": "train", "test": "t10k"}

SKIMAGE_REQUIREMENT = "scikit-image==0.26.0"
# Colour and greyscale photos used as mosaic backgrounds (cropped, so no single photo dominates).
BACKGROUND_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png", "retina.jpg", "rocket.jpg",
)
# Whole photos copied into the archive as real-world negatives in many formats and modes (RGBA, palette GIF
# with 24 frames, greyscale, large JPEG); dataset.py adds TIFF, CMYK JPEG and WebP conversions of some.
ARCHIVE_PHOTOS = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "horse.png",
    "logo.png", "camera.png", "no_time_for_that_tiny.gif",
)


class DemoSourceError(UserError):
    """A demo data source is missing and could not be installed."""


def fashion_dir() -> str:
    return os.environ.get(FASHION_DIR_ENV, FASHION_DEFAULT_DIR)


def _fashion_files(directory: str, split: str) -> tuple[str, str]:
    prefix = FASHION_SPLITS[split]
    return (
        os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"),
        os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"),
    )


def fashion_available(directory: str | None = None) -> bool:
    directory = directory or fashion_dir()
    return all(os.path.isfile(p) for split in FASHION_SPLITS for p in _fashion_files(directory, split))


def ensure_fashion_mnist(install: bool = True) -> str:
    """The Fashion-MNIST directory; installs the Debian package first when it is missing and we may."""
    directory = fashion_dir()
    if fashion_available(directory):
        return directory
    hint = f"install it with: apt-get update && apt-get install -y {FASHION_PACKAGE}"
    if not install:
        raise DemoSourceError(f"Fashion-MNIST not found in {directory}; {hint}")
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise DemoSourceError(f"Fashion-MNIST not found in {directory} and this user cannot apt-get; {hint}")
    log.info("installing Debian package %s (about 30 MB)", FASHION_PACKAGE)
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", FASHION_PACKAGE]):
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"})
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise DemoSourceError(f"{' '.join(cmd)} failed ({done.returncode}): {last[0]}")
    if not fashion_available(directory):
        raise DemoSourceError(f"{FASHION_PACKAGE} installed but {directory} lacks the IDX files")
    return directory


def _read_idx(path: str) -> np.ndarray:
    """Parse one gzipped IDX file (big-endian header: magic with dtype and rank, then the dimensions)."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DemoSourceError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    if array.size != int(np.prod(dims)):
        raise DemoSourceError(f"{path}: truncated ({array.size} values for shape {dims})")
    return array.reshape(dims)


def load_fashion(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels uint8 [N])`` for split ``train`` (60k) or ``test`` (10k)."""
    images_path, labels_path = _fashion_files(directory, split)
    images, labels = _read_idx(images_path), _read_idx(labels_path)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise DemoSourceError(f"{directory}: {split} images {images.shape} and labels {labels.shape} disagree")
    return images, labels


def _skimage_data_dir() -> str | None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        return None
    path = os.path.join(os.path.dirname(spec.origin), "data")
    return path if os.path.isfile(os.path.join(path, "astronaut.png")) else None


def ensure_sample_photos(install: bool = True) -> str:
    """scikit-image's bundled data directory; pip-installs scikit-image into this interpreter when missing.

    Only the files are used (read with Pillow); skimage itself is never imported.
    """
    directory = _skimage_data_dir()
    if directory:
        return directory
    hint = f"install it with: {sys.executable} -m pip install '{SKIMAGE_REQUIREMENT}' (or pip install '.[demo]')"
    if not install:
        raise DemoSourceError(f"scikit-image's sample photos are not installed; {hint}")
    log.info("installing %s for its bundled sample photos", SKIMAGE_REQUIREMENT)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", SKIMAGE_REQUIREMENT],
        capture_output=True, text=True,
    )
    importlib.invalidate_caches()
    directory = _skimage_data_dir()
    if done.returncode != 0 or not directory:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise DemoSourceError(f"could not install {SKIMAGE_REQUIREMENT}: {last[0]}; {hint}")
    return directory
