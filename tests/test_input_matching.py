"""Matching inputs: every URI once, whatever overlaps, spread evenly over the local workers."""
from __future__ import annotations

import os
from collections import Counter

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipelines.inputs import MatchInputs, expand_patterns
from pipelines.progress import MATCHED_KIND, read_counts
from pipelines.uri_shards import ShardDealer, pack, unpack


def test_shards_round_trip_any_path_characters():
    """Names that are not UTF-8 (surrogateescape), lone surrogates, newlines and NUL all survive the shards:
    an input that cannot cross the stage boundary would be lost, or end the run."""
    uris = ["/a/b c.jpg", "gs://bucket/é/ü.png", "/x/new\nline.jpg", "/y/#hash;semi.jpg",
            os.fsdecode(b"/z/caf\xe9.jpg"), "/lone\ud800surrogate.jpg", "/bad\0path", ""]
    assert unpack(pack(uris)) == uris
    assert unpack(pack([])) == []


def test_dealer_gives_each_shard_an_equal_share_and_bounds_its_buffers():
    dealer = ShardDealer(num_shards=4, flush_at=3)
    uris = [f"/img/{i}.jpg" for i in range(23)]
    early = list(dealer.deal(uris))
    assert early and all(len(unpack(packed)) == 3 for _, packed in early)  # full buffers leave at once
    shards = early + list(dealer.flush())
    per_shard = Counter()
    for shard, packed in shards:
        per_shard[shard] += len(unpack(packed))
    assert sorted(u for _, packed in shards for u in unpack(packed)) == sorted(uris)
    assert sorted(per_shard.values()) == [5, 6, 6, 6] and dealer.dealt == 23


def _archive(tmp_path) -> tuple[list[str], str]:
    images = tmp_path / "archive"
    (images / "sub").mkdir(parents=True)
    names = [images / f"{i:03d}.jpg" for i in range(30)] + [images / "sub" / "x.jpg"]
    for p in names:
        p.write_bytes(b"x")
    manifest = tmp_path / "tonight.txt"
    # Entries overlap the globs, repeat, are relative, and include a comment and blank lines.
    manifest.write_text("# nightly\narchive/000.jpg\n\n" + f"{images}/001.jpg\narchive/001.jpg\narchive/gone.jpg\n")
    return sorted([str(p) for p in names] + [str(images / "gone.jpg")]), str(manifest)


def test_overlapping_globs_and_manifest_name_each_uri_once(tmp_path):
    expected, manifest = _archive(tmp_path)
    root = str(tmp_path / "archive")
    found = list(expand_patterns([f"{root}/*.jpg", f"{root}/0*.jpg", f"{root}/sub/*.jpg", manifest]))
    assert len(found) == len(set(found)) and sorted(found) == expected
    assert sorted(expand_patterns([f"{root}/*.jpg"])) == [u for u in expected if "/sub/" not in u and "gone" not in u]


def test_match_inputs_spreads_distinct_uris_evenly_over_two_local_workers(tmp_path):
    """The runner gives each worker one bundle of the grouped shards: both bundles must be the same size."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    expected, manifest = _archive(tmp_path)
    root = str(tmp_path / "archive")
    progress = str(tmp_path / "progress")

    class BundleSizes(beam.DoFn):
        def start_bundle(self):
            self.n = 0

        def process(self, uri):
            self.n += 1

        def finish_bundle(self):
            from apache_beam.transforms.window import GlobalWindow
            from apache_beam.utils.windowed_value import WindowedValue

            yield WindowedValue(self.n, 0, [GlobalWindow()])

    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    with beam.Pipeline(runner=FnApiRunner(), options=options) as p:
        uris = p | MatchInputs([f"{root}/*.jpg", f"{root}/sub/*.jpg", manifest], num_shards=8,
                               progress_dir=progress)
        assert_that(uris, equal_to(expected), label="each once")
        sizes = uris | beam.ParDo(BundleSizes()) | beam.combiners.ToList() | beam.Map(sorted)
        assert_that(sizes, equal_to([[16, 16]]), label="even split")  # 32 distinct URIs
    assert read_counts(progress)[MATCHED_KIND] == len(expected) == 32


def test_match_inputs_for_distributed_runners_redistributes_per_uri(tmp_path):
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    expected, manifest = _archive(tmp_path)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        uris = p | MatchInputs([manifest, os.path.join(str(tmp_path), "archive", "*.jpg")], redistribute=True)
        assert_that(uris, equal_to([u for u in expected if "/sub/" not in u]))
