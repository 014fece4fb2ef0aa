"""The demo's data: mosaics labelled with exactly what was drawn, built deterministically and only once.

A small Fashion-MNIST-format (gzipped IDX) fixture stands in for Debian's package so this runs on a fresh
machine; the real package is what `make demo` installs and uses.
"""
from __future__ import annotations

import csv
import gzip
import os
import random
import struct

import numpy as np
import pytest
from PIL import Image

from jobs.demo import dataset, mosaic, sources


def _write_idx(path: str, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _garment(label: int) -> np.ndarray:
    """A 28x28 bright blob whose shape depends on the label (stands in for a garment)."""
    pixels = np.zeros((28, 28), np.uint8)
    pixels[4 + label % 5 : 24, 4 : 24 - label % 7] = 255
    return pixels


@pytest.fixture
def fashion_dir(tmp_path, monkeypatch) -> str:
    root = tmp_path / "fashion"
    root.mkdir()
    for prefix, n in (("train", 60), ("t10k", 30)):
        labels = np.arange(n) % 10
        _write_idx(str(root / f"{prefix}-images-idx3-ubyte.gz"), np.stack([_garment(int(l)) for l in labels]))
        _write_idx(str(root / f"{prefix}-labels-idx1-ubyte.gz"), labels)
    monkeypatch.setenv(sources.FASHION_DIR_ENV, str(root))
    return str(root)


def test_mosaic_labels_are_exactly_the_items_drawn():
    rng = random.Random(3)
    background = Image.new("RGB", (160, 160), (20, 20, 20))
    items = [mosaic.Item(_garment(i), name) for i, name in enumerate(("bag", "coat", "bag"))]
    made = mosaic.compose_mosaic(items, background, rng, grid=2)
    assert made.labels == ("bag", "coat")
    assert len({p.cell for p in made.placements}) == 3  # one item per cell, no overlap
    pixels = np.asarray(made.image, dtype=np.int32)
    for placement in made.placements:
        left, top, right, bottom = placement.box
        assert pixels[top:bottom, left:right].max() > 100, f"{placement.class_name} was not drawn"
    with pytest.raises(ValueError, match="do not fit"):
        mosaic.compose_mosaic(items * 2, background, rng, grid=2)


def test_idx_reader_refuses_a_truncated_file(tmp_path):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">3I", 5, 28, 28) + b"\0" * 100)
    with pytest.raises(sources.DemoSourceError, match="truncated"):
        sources._read_idx(str(path))


def test_demo_data_is_built_once_and_labels_match_files(tmp_path, fashion_dir):
    config = dataset.DemoDataConfig(train_images=24, archive_mosaics=10, image_size=96)
    first = dataset.build(str(tmp_path / "demo"), config, install=False)
    assert not first.reused
    with open(os.path.join(first.train_dir, "labels.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 24
    for row in rows:
        assert os.path.exists(os.path.join(first.train_dir, row["image"]))
        tags = row["labels"].split("|")
        assert 1 <= len(tags) <= config.max_items and set(tags) <= set(sources.FASHION_CLASSES)
    with open(first.archive_labels) as fh:
        archive = list(csv.DictReader(fh))
    assert len([r for r in archive if r["labels"]]) == 10  # the mosaics; photos are labelled negatives
    for row in archive:
        Image.open(os.path.join(first.root, row["image"])).load()  # every labelled archive file is a real image
    assert {os.path.basename(p) for p in first.bad_files} == {"empty.jpg", "notes.jpg", "tiny.png", "truncated.jpg"}

    stamp = os.path.getmtime(os.path.join(first.train_dir, "labels.csv"))
    again = dataset.build(str(tmp_path / "demo"), config, install=False)
    assert again.reused and os.path.getmtime(os.path.join(first.train_dir, "labels.csv")) == stamp

    elsewhere = dataset.build(str(tmp_path / "other"), config, install=False)
    a = open(os.path.join(first.train_dir, "images", "mosaic_00005.jpg"), "rb").read()
    b = open(os.path.join(elsewhere.train_dir, "images", "mosaic_00005.jpg"), "rb").read()
    assert a == b  # same seed, same bytes


def test_missing_data_package_is_a_one_line_error_when_not_installing(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.FASHION_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(sources.DemoSourceError, match="apt-get install -y dataset-fashion-mnist"):
        dataset.build(str(tmp_path / "demo"), install=False)


@pytest.mark.slow
def test_small_demo_end_to_end_accounts_for_every_file_and_reuses_on_second_run(tmp_path, fashion_dir, capsys):
    """Real training, real `tagger tag` (Beam + onnxruntime), Parquet read back with DuckDB; then a rerun."""
    import duckdb

    from jobs.cli import main as tagger

    try:
        sources.ensure_sample_photos(install=False)
    except sources.DemoSourceError as exc:
        pytest.skip(str(exc))
    workdir = str(tmp_path / "demo")
    args = ["demo", "--workdir", workdir, "--no-install", "--train-images", "60", "--archive-mosaics", "12",
            "--epochs", "2"]
    assert tagger(args) == 0
    first = capsys.readouterr().out
    assert "model: demo@v1 (trained now)" in first and "top tags per day" in first

    n_photos = len(sources.ARCHIVE_PHOTOS) + len(dataset.CONVERSIONS)
    rows = duckdb.sql(f"SELECT count(*), count(DISTINCT image_uri) FROM read_parquet("
                      f"'{workdir}/tags/run_date=*/model_version=*/*.parquet', hive_partitioning=true)").fetchall()[0]
    assert rows == (12 + n_photos, 12 + n_photos)  # every good file tagged exactly once
    errors = duckdb.sql(f"SELECT count(*) FROM read_parquet('{workdir}/tags/_errors/**/*.parquet')").fetchall()[0][0]
    assert errors == 4  # the four broken files, dead-lettered

    assert tagger(args) == 0
    second = capsys.readouterr().out
    assert "demo data: reused" in second and "reused from the registry" in second
    again = duckdb.sql(f"SELECT count(*) FROM read_parquet("
                       f"'{workdir}/tags/run_date=*/model_version=*/*.parquet', hive_partitioning=true)").fetchall()[0]
    assert again[0] == rows[0]  # --incremental: nothing re-tagged, no duplicate rows
