"""The README shows the analyst queries the tests run: it must show them verbatim, not a drifting copy."""
from __future__ import annotations

import os

import pytest

from pipelines.catalog import load_queries

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


@pytest.mark.parametrize("name", ["setup", "top_tags_per_day", "images_with_tag", "tag_cooccurrence", "compare_versions"])
def test_readme_shows_each_tested_query_verbatim(name):
    queries = load_queries()
    readme = open(README, encoding="utf-8").read()
    sql = queries[name].strip()
    assert sql, f"schemas/queries.sql has an empty {name!r} section"
    assert sql in readme, f"README.md does not show the {name!r} query exactly as schemas/queries.sql has it"
