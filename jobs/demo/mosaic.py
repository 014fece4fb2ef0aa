"""Compose multi-label demo images: Fashion-MNIST garments pasted into the cells of a grid over a photo.

Pure functions of their inputs and a seeded ``random.Random``, so the same seed always gives the same bytes and
tests can check that an image's labels are exactly the garments drawn on it.
"""
from __future__ import annotations

import colorsys
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageEnhance


@dataclass(frozen=True)
class Item:
    """One garment to draw: its 28x28 greyscale pixels (bright object on black) and its tag."""

    pixels: np.ndarray
    class_name: str


@dataclass(frozen=True)
class Placement:
    class_name: str
    box: tuple[int, int, int, int]  # (left, top, right, bottom) of the pasted sprite
    cell: int  # row-major cell index in the grid


@dataclass(frozen=True)
class Mosaic:
    image: Image.Image
    labels: tuple[str, ...]  # sorted, unique: the multi-label ground truth
    placements: tuple[Placement, ...]


def background_from(photo: Image.Image, size: int, rng: random.Random, dim: float = 0.55) -> Image.Image:
    """A random square crop of ``photo``, resized to ``size`` and dimmed so garments stand out."""
    photo = photo.convert("RGB")
    w, h = photo.size
    side = rng.randint(max(1, min(w, h) // 2), min(w, h))
    x0, y0 = rng.randint(0, w - side), rng.randint(0, h - side)
    crop = photo.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.BILINEAR)
    return ImageEnhance.Brightness(crop).enhance(dim)


def random_tint(rng: random.Random) -> tuple[int, int, int]:
    """A bright, saturated colour (garments are recognised by shape, not colour)."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.3, 0.9), 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def sprite(pixels: np.ndarray, side: int, tint: tuple[int, int, int]) -> tuple[Image.Image, Image.Image]:
    """The garment upscaled to ``side`` px: an RGB layer shaded by intensity and an alpha mask."""
    grey = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "L").resize(
        (side, side), Image.Resampling.BICUBIC
    )
    v = np.asarray(grey, dtype=np.float32) / 255.0
    shade = 0.35 + 0.65 * v
    rgb = np.stack([shade * c for c in tint], axis=-1).clip(0, 255).astype(np.uint8)
    alpha = (np.minimum(1.0, v * 4.0) * 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB"), Image.fromarray(alpha, "L")


def compose_mosaic(
    items: Sequence[Item],
    background: Image.Image,
    rng: random.Random,
    grid: int = 2,
) -> Mosaic:
    """Paste each item into its own randomly chosen cell of a ``grid`` x ``grid`` layout over ``background``.

    Labels are the set of the items' classes; cells left empty show only the background.
    """
    if len(items) > grid * grid:
        raise ValueError(f"{len(items)} items do not fit a {grid}x{grid} grid")
    image = background.convert("RGB").copy()
    size = min(image.size)
    cell_side = size // grid
    cells = rng.sample(range(grid * grid), len(items))
    placements = []
    for item, cell in zip(items, cells):
        side = rng.randint(int(cell_side * 0.7), cell_side)
        row, col = divmod(cell, grid)
        left = col * cell_side + rng.randint(0, cell_side - side)
        top = row * cell_side + rng.randint(0, cell_side - side)
        layer, mask = sprite(item.pixels, side, random_tint(rng))
        image.paste(layer, (left, top), mask)
        placements.append(Placement(item.class_name, (left, top, left + side, top + side), cell))
    labels = tuple(sorted({p.class_name for p in placements}))
    return Mosaic(image=image, labels=labels, placements=tuple(placements))
