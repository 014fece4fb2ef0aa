"""Where the images come from: globs on any Beam filesystem, or a manifest file listing one URI per line.

Matching runs inside the pipeline (``fileio.MatchAll``) so archives of millions of files never pass through
the launching machine. Reading is a DoFn so an unreadable path becomes a dead letter (stage ``read``).
"""
from __future__ import annotations

import hashlib
import os
from typing import Iterable

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.records import FAILED, MAIN, Failure, ImageInput
from pipelines.transforms import failure_counter
from schemas.errors import UserError

MANIFEST_SUFFIXES = (".txt", ".lst", ".list", ".manifest")
SKIPPED = "skipped"
_GLOB_CHARS = set("*?[")


class InputError(UserError):
    """An --input that names nothing or cannot be read."""


def is_manifest(pattern: str) -> bool:
    """A manifest is a plain (non-glob) path ending in .txt/.lst/.list/.manifest."""
    return not (_GLOB_CHARS & set(pattern)) and pattern.lower().endswith(MANIFEST_SUFFIXES)


def resolve_entry(manifest_uri: str, entry: str) -> str:
    """Manifest entries may be absolute URIs or paths relative to the manifest's directory."""
    if "://" in entry or entry.startswith("/"):
        return entry
    base = manifest_uri.rsplit("/", 1)[0] if "/" in manifest_uri else "."
    return FileSystems.join(base, entry)


def check_inputs(patterns: list[str]) -> None:
    """Fail fast, in one line, if a glob matches nothing or a manifest is missing (cheap: limit 1)."""
    if not patterns:
        raise InputError("no --input given")
    for pattern in patterns:
        if "://" not in pattern and os.path.isdir(pattern):
            raise InputError(f"--input {pattern} is a directory; pass a glob such as {pattern.rstrip('/')}/*.jpg")
        if is_manifest(pattern):
            if not FileSystems.exists(pattern):
                raise InputError(f"manifest {pattern} does not exist")
            continue
        try:
            found = FileSystems.match([pattern], limits=[1])[0].metadata_list
        except Exception as exc:  # BeamIOError for unknown schemes, permission problems...
            raise InputError(f"cannot list --input {pattern}: {exc}") from exc
        if not found:
            raise InputError(f"--input {pattern} matched no files")


def count_local_inputs(patterns: list[str]) -> int | None:
    """Total number of inputs for a progress ETA, when cheap to know (local paths only), else None."""
    total = 0
    for pattern in patterns:
        if "://" in pattern:
            return None
        if is_manifest(pattern):
            with open(pattern, encoding="utf-8") as fh:
                total += sum(1 for line in fh if line.strip() and not line.startswith("#"))
        else:
            total += len(FileSystems.match([pattern])[0].metadata_list)
    return total


class MatchInputs(beam.PTransform):
    """Patterns -> distinct input URIs (str). Globs use MatchAll; manifests are read as text, in parallel."""

    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.patterns = list(patterns)

    def expand(self, pbegin):
        globs = [p for p in self.patterns if not is_manifest(p)]
        manifests = [p for p in self.patterns if is_manifest(p)]
        branches = []
        if globs:
            branches.append(
                pbegin
                | "Globs" >> beam.Create(globs)
                | "MatchAll" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
                | "Paths" >> beam.Map(lambda m: m.path)
            )
        for i, manifest in enumerate(manifests):
            branches.append(
                pbegin
                | f"ReadManifest{i}" >> beam.io.ReadFromText(manifest)
                | f"Entries{i}" >> beam.Map(str.strip)
                | f"NoBlank{i}" >> beam.Filter(lambda line: bool(line) and not line.startswith("#"))
                | f"Resolve{i}" >> beam.Map(lambda e, m=manifest: resolve_entry(m, e))
            )
        merged = branches[0] if len(branches) == 1 else tuple(branches) | "AllInputs" >> beam.Flatten()
        # Distinct both de-duplicates overlapping globs and redistributes the work across workers.
        return merged | "Distinct" >> beam.Distinct()


class _ReadFn(beam.DoFn):
    def __init__(self, skip_sha256: frozenset[str] = frozenset()) -> None:
        self.skip = skip_sha256

    def process(self, uri: str) -> Iterable:
        try:
            with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                data = fh.read()
        except Exception as exc:  # missing, permission denied, I/O error: a dead letter, not a dead run
            failure_counter("read").inc()
            message = str(exc).replace("\n", " ")[:500]
            yield beam.pvalue.TaggedOutput(FAILED, Failure(uri, "read", type(exc).__name__, message))
            return
        sha256 = hashlib.sha256(data).hexdigest() if self.skip else None
        if sha256 in self.skip:
            yield beam.pvalue.TaggedOutput(SKIPPED, uri)
            return
        yield ImageInput(uri, data, sha256)


class ReadImages(beam.PTransform):
    """URI -> ImageInput | Failure(stage='read') | skipped URI (content already tagged by this model version)."""

    def __init__(self, skip_sha256: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.skip_sha256 = frozenset(skip_sha256)

    def expand(self, pcoll):
        result = pcoll | beam.ParDo(_ReadFn(self.skip_sha256)).with_outputs(FAILED, SKIPPED, main=MAIN)
        return result[MAIN], result[FAILED], result[SKIPPED]
