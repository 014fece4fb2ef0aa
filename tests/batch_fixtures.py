"""One real batch-tagging history shared by the batch and query tests (built once per session: it is slow).

History under ``output``: run1 (v1, all inputs), run2 (v1 --incremental, nothing new), run3 (v1 --incremental
after 3 new images), run4 (v2 promoted, --incremental: re-tags everything), run5 (v2 again, not incremental:
same-night duplicates on disk that readers must not see).
"""
from __future__ import annotations

import glob
import os
import random
from dataclasses import dataclass, field

import pytest

from pipelines.batch import TagJob, TagResult, run_tag_job
from tests.bad_inputs import write_bad_corpus
from tests.model_factory import publish_tiny_model
from tests.synthetic import CLASSES, encode, make_sample, write_dataset

N_GOOD = 24


@dataclass
class History:
    root: str
    registry: str
    output: str
    images: str
    manifest_file: str
    bad_expected: dict
    runs: dict[str, TagResult] = field(default_factory=dict)

    def job(self, **kw) -> TagJob:
        base = dict(inputs=[os.path.join(self.images, "*"), self.manifest_file], output=self.output,
                    registry_root=self.registry, progress_interval=0.5)
        return TagJob(**(base | kw))


def add_images(directory: str, n: int, seed: int, prefix: str) -> list[str]:
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        path = os.path.join(directory, f"{prefix}_{i:03d}.jpg")
        with open(path, "wb") as fh:
            fh.write(encode(make_sample(rng, (80, 64)).image))
        paths.append(path)
    return paths


_BUILT: dict[str, History] = {}


@pytest.fixture(scope="session")
def history(tmp_path_factory) -> History:
    # Imported by two test modules, pytest sees two fixtures; build the (slow) history only once anyway.
    if "history" not in _BUILT:
        _BUILT["history"] = _build(str(tmp_path_factory.mktemp("batch")))
    return _BUILT["history"]


def _build(root: str) -> History:
    registry = os.path.join(root, "registry")
    write_dataset(os.path.join(root, "data"), N_GOOD)
    images = os.path.join(root, "data", "images")
    bad_expected = write_bad_corpus(images)
    manifest_file = os.path.join(root, "inputs.txt")
    listed = sorted(glob.glob(os.path.join(images, "img_0000*.jpg")))[:3]
    with open(manifest_file, "w") as fh:  # overlaps the glob (must not double count) + one missing path
        fh.write("# nightly list\n" + "\n".join(listed) + "\n\ndata/images/does_not_exist.jpg\n")
    h = History(root, registry, os.path.join(root, "out"), images, manifest_file, bad_expected)

    v1 = publish_tiny_model(registry, CLASSES, seed=0, threshold=0.5)
    h.runs["run1"] = run_tag_job(h.job())
    h.runs["run2"] = run_tag_job(h.job(incremental=True))
    add_images(images, 3, seed=99, prefix="new")
    h.runs["run3"] = run_tag_job(h.job(incremental=True, model_ref=f"tagger@{v1.version}"))
    publish_tiny_model(registry, CLASSES, seed=1, threshold=0.45)  # v2, promoted
    h.runs["run4"] = run_tag_job(h.job(incremental=True))
    h.runs["run5"] = run_tag_job(h.job())
    return h
