"""Write the demo's training set and the archive to tag, deterministically and only once.

``train/`` holds labelled mosaics (``labels.csv``) built from Fashion-MNIST's train split; ``archive/`` holds
mosaics from its test split, real sample photos in several formats and a few deliberately broken files, so a
demo run shows the dead-letter accounting. ``archive_labels.csv`` keeps the archive's ground truth outside the
archive. A ``.complete.json`` marker, written last, makes a second run reuse everything.
"""
from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass

from PIL import Image

from jobs.demo import mosaic, sources
from jobs.demo.config import DemoDataConfig
from models import storage

MARKER = ".complete.json"


@dataclass(frozen=True)
class DemoData:
    root: str
    train_dir: str
    archive_dir: str
    archive_labels: str
    classes: tuple[str, ...]
    bad_files: tuple[str, ...]
    reused: bool


def build(root: str, config: DemoDataConfig = DemoDataConfig(), install: bool = True) -> DemoData:
    """Build (or reuse) the demo data under ``root``."""
    train_dir, archive_dir = os.path.join(root, "train"), os.path.join(root, "archive")
    archive_labels = os.path.join(root, "archive_labels.csv")
    marker = os.path.join(root, MARKER)
    wanted = asdict(config)
    if os.path.exists(marker):
        with open(marker) as fh:
            done = json.load(fh)
        if done.get("config") == wanted:
            return DemoData(root, train_dir, archive_dir, archive_labels, tuple(done["classes"]),
                            tuple(done["bad_files"]), reused=True)
    for stale in (train_dir, archive_dir):
        shutil.rmtree(stale, ignore_errors=True)
    fashion = sources.ensure_fashion_mnist(install=install)
    photos_dir = sources.ensure_sample_photos(install=install)
    backgrounds = [Image.open(os.path.join(photos_dir, name)).convert("RGB") for name in sources.BACKGROUND_PHOTOS]
    rng = random.Random(config.seed)

    train_images, train_labels = sources.load_fashion(fashion, "train")
    _write_mosaics(os.path.join(train_dir, "images"), os.path.join(train_dir, "labels.csv"), train_dir,
                   train_images, train_labels, backgrounds, config.train_images, config, rng, prefix="mosaic")
    test_images, test_labels = sources.load_fashion(fashion, "test")
    _write_mosaics(archive_dir, archive_labels, root, test_images, test_labels, backgrounds,
                   config.archive_mosaics, config, rng, prefix="upload")
    photos = _copy_photos(photos_dir, os.path.join(archive_dir, "photos"))
    bad = _write_bad_files(os.path.join(archive_dir, "incoming"))
    with open(archive_labels, "a", newline="") as fh:  # real photos: no garment, a valid negative
        writer = csv.writer(fh)
        for path in photos:
            writer.writerow([os.path.relpath(path, root), ""])
    storage.write_bytes_atomic(marker, json.dumps(
        {"config": wanted, "classes": list(sources.FASHION_CLASSES), "bad_files": bad}, indent=2).encode())
    return DemoData(root, train_dir, archive_dir, archive_labels, sources.FASHION_CLASSES, tuple(bad), reused=False)


def _write_mosaics(images_dir: str, labels_path: str, relative_to: str, pixels, labels, backgrounds,
                   count: int, config: DemoDataConfig, rng: random.Random, prefix: str) -> None:
    """``count`` mosaics as JPEGs in ``images_dir``; ``labels_path`` lists them relative to ``relative_to``."""
    os.makedirs(images_dir, exist_ok=True)
    with open(labels_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "labels"])
        for i in range(count):
            picks = rng.sample(range(len(labels)), rng.randint(1, config.max_items))
            items = [mosaic.Item(pixels[j], sources.FASHION_CLASSES[int(labels[j])]) for j in picks]
            background = mosaic.background_from(rng.choice(backgrounds), config.image_size, rng)
            made = mosaic.compose_mosaic(items, background, rng, grid=2)
            path = os.path.join(images_dir, f"{prefix}_{i:05d}.jpg")
            made.image.save(path, format="JPEG", quality=90)
            writer.writerow([os.path.relpath(path, relative_to), "|".join(made.labels)])


# (source photo, file name in the archive, Pillow format, mode): formats and modes the decoder must handle.
CONVERSIONS = (
    ("coffee.png", "coffee.tif", "TIFF", "RGB"),
    ("chelsea.png", "chelsea_cmyk.jpg", "JPEG", "CMYK"),
    ("astronaut.png", "astronaut.webp", "WEBP", "RGB"),
)


def _copy_photos(photos_dir: str, target: str) -> list[str]:
    os.makedirs(target, exist_ok=True)
    copied = []
    for name in sources.ARCHIVE_PHOTOS:
        source = os.path.join(photos_dir, name)
        if os.path.exists(source):
            shutil.copyfile(source, os.path.join(target, name))
            copied.append(os.path.join(target, name))
    for source, name, fmt, mode in CONVERSIONS:
        path = os.path.join(target, name)
        Image.open(os.path.join(photos_dir, source)).convert(mode).save(path, format=fmt)
        copied.append(path)
    return copied


def _write_bad_files(target: str) -> list[str]:
    """Files a real archive contains sooner or later; each must end up as a dead letter with its reason."""
    os.makedirs(target, exist_ok=True)
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(good, format="JPEG")
    bad = {
        "empty.jpg": b"",
        "truncated.jpg": good.getvalue()[: len(good.getvalue()) // 3],
        "notes.jpg": b"this is a text file with an image name\n",
        "tiny.png": _png((4, 4)),
    }
    for name, data in bad.items():
        with open(os.path.join(target, name), "wb") as fh:
            fh.write(data)
    return sorted(os.path.join(target, name) for name in bad)


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (0, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()
