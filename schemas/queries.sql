-- Analyst queries over the Parquet written by `tagger tag --output DIR`, for DuckDB.
-- One file, used verbatim by the README, `pipelines/catalog.py` (and so `make demo`) and the tests.
-- Sections start with `-- name: NAME`. `setup` defines the views; '{output}' stands for DIR.
-- Parameters are DuckDB prepared-statement parameters ($tag, ...): in the duckdb shell use
-- `SET VARIABLE` / literal values, in Python pass them as a dict to con.execute(sql, params).

-- name: setup
-- Only runs with a manifest are visible: rows of a crashed or still-running run are filtered out by run_id.
-- Re-tagging the same image with the same model (name and version) on the same day keeps only the latest row.
CREATE OR REPLACE VIEW manifests AS
SELECT * FROM read_json_auto('{output}/_manifests/*.json', union_by_name = true);
CREATE OR REPLACE VIEW tags AS
SELECT t.*
FROM read_parquet('{output}/run_date=*/model_version=*/*.parquet', hive_partitioning = true,
                  hive_types = {'run_date': DATE, 'model_version': VARCHAR}, union_by_name = true) AS t
WHERE t.run_id IN (SELECT run_id FROM manifests)
QUALIFY row_number() OVER (PARTITION BY t.run_date, t.model_name, t.model_version, t.image_uri
                           ORDER BY t.tagged_at DESC, t.run_id DESC) = 1;
CREATE OR REPLACE VIEW errors AS
SELECT e.*
FROM read_parquet('{output}/_errors/run_date=*/*.parquet', hive_partitioning = true,
                  hive_types = {'run_date': DATE}, union_by_name = true) AS e
WHERE e.run_id IN (SELECT run_id FROM manifests);

-- name: top_tags_per_day
-- The ten most frequent tags of each day (images tagged that day, per model: name and version).
SELECT run_date, model_name, model_version, tag, count(*) AS images
FROM (SELECT run_date, model_name, model_version, unnest(tags) AS tag FROM tags)
GROUP BY run_date, model_name, model_version, tag
QUALIFY row_number() OVER (PARTITION BY run_date, model_name, model_version ORDER BY count(*) DESC, tag) <= 10
ORDER BY run_date, model_name, model_version, images DESC, tag;

-- name: images_with_tag
-- Images whose probability for $tag is at least $min_probability, most confident first.
SELECT image_uri, run_date, model_version, probabilities[$tag] AS probability, tags
FROM tags
WHERE probabilities[$tag] >= $min_probability
ORDER BY probability DESC, image_uri;

-- name: tag_cooccurrence
-- Pairs of tags that appear on the same image, most frequent first.
WITH t AS (SELECT run_date, model_name, model_version, image_uri, unnest(tags) AS tag FROM tags)
SELECT a.tag AS tag_a, b.tag AS tag_b, count(*) AS images
FROM t AS a
JOIN t AS b USING (run_date, model_name, model_version, image_uri)
WHERE a.tag < b.tag
GROUP BY a.tag, b.tag
ORDER BY images DESC, tag_a, tag_b;

-- name: compare_versions
-- Model $model_a@$version_a vs $model_b@$version_b on the same images (matched by content hash): per tag,
-- how many images each model version gives it, how many both agree on, and how many changed. Keyed on model
-- name and version: two models may share a version string.
WITH a AS (SELECT content_sha256, arg_max(tags, tagged_at) AS tags FROM tags
           WHERE model_name = $model_a AND model_version = $version_a GROUP BY content_sha256),
     b AS (SELECT content_sha256, arg_max(tags, tagged_at) AS tags FROM tags
           WHERE model_name = $model_b AND model_version = $version_b GROUP BY content_sha256),
     pairs AS (SELECT a.content_sha256, a.tags AS tags_a, b.tags AS tags_b FROM a JOIN b USING (content_sha256)),
     per_tag AS (SELECT unnest(list_distinct(list_concat(tags_a, tags_b))) AS tag, tags_a, tags_b FROM pairs)
SELECT tag,
       count(*) FILTER (WHERE list_contains(tags_a, tag)) AS images_a,
       count(*) FILTER (WHERE list_contains(tags_b, tag)) AS images_b,
       count(*) FILTER (WHERE list_contains(tags_a, tag) AND list_contains(tags_b, tag)) AS both_versions,
       count(*) FILTER (WHERE list_contains(tags_a, tag) <> list_contains(tags_b, tag)) AS changed
FROM per_tag
GROUP BY tag
ORDER BY changed DESC, tag;
