"""Generated images with known multi-labels: coloured shapes on a noisy background.

Labels are the set of shape kinds plus the set of colours drawn, e.g. ``{"circle", "red", "square", "blue"}``,
which a small CNN learns in a few epochs, so tests can check that training really learns.
"""
from __future__ import annotations

import csv
import io
import os
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220)}
CLASSES = (*SHAPES, *COLOURS)


@dataclass(frozen=True)
class Sample:
    image: Image.Image
    labels: tuple[str, ...]


def make_sample(rng: random.Random, size: tuple[int, int] = (96, 96), max_shapes: int = 2) -> Sample:
    w, h = size
    base = tuple(rng.randint(90, 170) for _ in range(3))
    img = Image.new("RGB", size, base)
    draw = ImageDraw.Draw(img)
    for _ in range(60):  # speckle noise so nothing is trivially constant
        x, y = rng.randrange(w), rng.randrange(h)
        draw.point((x, y), fill=tuple(rng.randint(60, 200) for _ in range(3)))
    labels: set[str] = set()
    for _ in range(rng.randint(1, max_shapes)):
        shape = rng.choice(SHAPES)
        colour = rng.choice(list(COLOURS))
        labels.update((shape, colour))
        side = rng.randint(min(w, h) // 4, min(w, h) // 2)
        x0, y0 = rng.randint(0, w - side), rng.randint(0, h - side)
        box = (x0, y0, x0 + side, y0 + side)
        fill = COLOURS[colour]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x0 + side // 2, y0), (x0, y0 + side), (x0 + side, y0 + side)], fill=fill)
    return Sample(img, tuple(sorted(labels)))


def encode(image: Image.Image, fmt: str = "JPEG", **save_args) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}) | save_args)
    return buf.getvalue()


def write_dataset(root: str, n: int, seed: int = 0, size: tuple[int, int] = (96, 96)) -> str:
    """Write ``n`` labelled JPEGs plus ``labels.csv`` (``image,labels``) under ``root``; returns the CSV path."""
    rng = random.Random(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    csv_path = os.path.join(root, "labels.csv")
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "labels"])
        for i in range(n):
            sample = make_sample(rng, size)
            rel = f"images/img_{i:05d}.jpg"
            with open(os.path.join(root, rel), "wb") as out:
                out.write(encode(sample.image))
            writer.writerow([rel, "|".join(sample.labels)])
    return csv_path
