"""The four analyst queries of schemas/queries.sql, run exactly as written on real output, against answers
computed independently from the raw Parquet rows with pyarrow."""
from __future__ import annotations

import glob
import itertools
import json
import os
from collections import Counter

import pyarrow.parquet as pq
import pytest

from pipelines.catalog import QUERIES_FILE, connect, load_queries, run_query
from tests.batch_fixtures import History, history  # noqa: F401  (session fixture)

pytestmark = pytest.mark.slow


def visible_rows(h: History) -> list[dict]:
    """Rows of committed runs, latest per (day, model name and version, image): what readers should see."""
    committed = {json.load(open(p))["run_id"] for p in glob.glob(os.path.join(h.output, "_manifests", "*.json"))}
    latest: dict[tuple, dict] = {}
    for path in glob.glob(os.path.join(h.output, "run_date=*", "model_version=*", "*.parquet")):
        run_date = path.split("run_date=")[1].split("/")[0]
        for row in pq.read_table(path).to_pylist():
            if row["run_id"] not in committed:
                continue
            row["run_date"] = run_date
            row["probabilities"] = dict(row["probabilities"])
            key = (run_date, row["model_name"], row["model_version"], row["image_uri"])
            if key not in latest or (row["tagged_at"], row["run_id"]) > (latest[key]["tagged_at"], latest[key]["run_id"]):
                latest[key] = row
    return list(latest.values())


def test_the_readme_has_exactly_these_queries():
    assert set(load_queries()) == {"setup", "top_tags_per_day", "images_with_tag", "tag_cooccurrence",
                                   "compare_versions"}
    assert os.path.basename(QUERIES_FILE) == "queries.sql"


def test_top_tags_per_day(history: History):
    cols, got = run_query(connect(history.output), "top_tags_per_day")
    assert cols == ["run_date", "model_name", "model_version", "tag", "images"]
    counts: Counter = Counter()
    for row in visible_rows(history):
        for tag in row["tags"]:
            counts[(row["run_date"], row["model_name"], row["model_version"], tag)] += 1
    expected = []
    for (day, name, version), group in itertools.groupby(sorted(counts), key=lambda k: k[:3]):
        ranked = sorted(((t, counts[(day, name, version, t)]) for *_, t in group), key=lambda x: (-x[1], x[0]))[:10]
        expected += [(day, name, version, t, n) for t, n in ranked]
    assert [(str(d), m, v, t, n) for d, m, v, t, n in got] == expected and expected


def test_images_with_tag_above_probability(history: History):
    params = {"tag": "red", "min_probability": 0.5}
    cols, got = run_query(connect(history.output), "images_with_tag", params)
    assert cols[:4] == ["image_uri", "run_date", "model_version", "probability"]
    expected = sorted(
        ((r["image_uri"], r["model_version"], r["probabilities"]["red"]) for r in visible_rows(history)
         if r["probabilities"]["red"] >= 0.5),
        key=lambda x: (-x[2], x[0]),
    )
    assert expected and [(u, v) for u, _, v, *_ in got] == [(u, v) for u, v, _ in expected]
    assert all(p >= 0.5 for *_, p, _ in got)


def test_tag_cooccurrence(history: History):
    _, got = run_query(connect(history.output), "tag_cooccurrence")
    pairs: Counter = Counter()
    for row in visible_rows(history):
        for a, b in itertools.combinations(sorted(set(row["tags"])), 2):
            pairs[(a, b)] += 1
    assert got == sorted(((a, b, n) for (a, b), n in pairs.items()), key=lambda x: (-x[2], x[0], x[1]))
    assert got


def test_compare_two_model_versions_on_the_same_images(history: History):
    cols, got = run_query(connect(history.output), "compare_versions",
                          {"model_a": "tagger", "version_a": "v1", "model_b": "tagger", "version_b": "v2"})
    assert cols == ["tag", "images_a", "images_b", "both_versions", "changed"]
    by_version: dict[str, dict[str, set]] = {"v1": {}, "v2": {}}
    for row in sorted(visible_rows(history), key=lambda r: r["tagged_at"]):
        by_version[row["model_version"]][row["content_sha256"]] = set(row["tags"])
    common = by_version["v1"].keys() & by_version["v2"].keys()
    assert len(common) == history.runs["run4"].manifest.tagged  # v2 re-tagged every image v1 had
    stats: dict[str, list[int]] = {}
    for sha in common:
        a, b = by_version["v1"][sha], by_version["v2"][sha]
        for tag in a | b:
            s = stats.setdefault(tag, [0, 0, 0, 0])
            s[0] += tag in a
            s[1] += tag in b
            s[2] += tag in a and tag in b
            s[3] += (tag in a) != (tag in b)
    expected = sorted(((t, *s) for t, s in stats.items()), key=lambda x: (-x[4], x[0]))
    assert got == expected
    assert any(row[4] > 0 for row in got)  # the two versions really disagree somewhere
