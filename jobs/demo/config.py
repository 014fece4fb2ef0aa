"""The demo data's size and seed, in a module light enough for `tagger --help` to import (no PIL, no numpy)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoDataConfig:
    train_images: int = 480
    archive_mosaics: int = 150
    image_size: int = 160
    max_items: int = 3
    seed: int = 7
