"""Where the images come from: globs on any Beam filesystem, or a manifest file listing one URI per line.

Matching runs inside the pipeline, so on a distributed runner the list of URIs never passes through the
launching machine. Reading is a DoFn so an unreadable path becomes a dead letter (stage ``read``).
"""
from __future__ import annotations

import hashlib
import io
import itertools
import os
from typing import Iterable, Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.incremental import AlreadyTagged
from pipelines.progress import MATCHED_KIND, ProgressFile
from pipelines.records import FAILED, MAIN, Failure, ImageInput
from pipelines.transforms import failure_counter
from pipelines.uri_shards import DEFAULT_SHARDS, ShardDealer, unpack
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


def read_manifest(manifest_uri: str) -> Iterator[str]:
    """The URIs a manifest lists: one per line, blank lines and ``#`` comments skipped, relative entries resolved."""
    with FileSystems.open(manifest_uri, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        for line in io.TextIOWrapper(raw, encoding="utf-8"):
            entry = line.strip()
            if entry and not entry.startswith("#"):
                yield resolve_entry(manifest_uri, entry)


def expand_patterns(patterns: list[str]) -> Iterator[str]:
    """Every URI the patterns name, each once, in listing order.

    A single glob cannot name a file twice, so only several patterns or a manifest pay for the set of seen
    URIs (about 150 bytes per URI, held by this one step while it lists)."""
    uris = itertools.chain.from_iterable(
        read_manifest(p) if is_manifest(p) else (m.path for m in FileSystems.match([p])[0].metadata_list)
        for p in patterns
    )
    if len(patterns) == 1 and not is_manifest(patterns[0]):
        yield from uris
        return
    seen: set[str] = set()
    for uri in uris:
        if uri not in seen:
            seen.add(uri)
            yield uri


class _ExpandFn(beam.DoFn):
    """All patterns -> (shard, packed URIs); also writes the matched total for the launcher's progress ETA."""

    def __init__(self, num_shards: int, progress_dir: str | None) -> None:
        self.num_shards, self.progress_dir = num_shards, progress_dir

    def process(self, patterns: tuple[str, ...]) -> Iterable[tuple[int, bytes]]:
        dealer = ShardDealer(self.num_shards)
        yield from dealer.deal(expand_patterns(list(patterns)))
        yield from dealer.flush()
        if self.progress_dir:
            matched = ProgressFile(self.progress_dir, MATCHED_KIND)
            matched.add(dealer.dealt)
            matched.flush()


class MatchInputs(beam.PTransform):
    """Patterns -> distinct input URIs (str), spread evenly over the workers.

    One step lists every pattern (a single glob is listed by one worker in ``fileio.MatchAll`` too) and
    de-duplicates; the URIs then cross the stage boundary as compressed shards (:mod:`pipelines.uri_shards`)
    so the in-process runner's memory does not grow with the archive. ``num_shards`` should be a multiple of
    the local worker count. ``redistribute`` adds a per-URI ``Reshuffle`` for distributed runners, whose
    shuffle lives outside the launching process and whose workers outnumber the shards.
    """

    def __init__(
        self,
        patterns: list[str],
        *,
        num_shards: int = DEFAULT_SHARDS,
        redistribute: bool = False,
        progress_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.patterns = list(patterns)
        self.num_shards, self.redistribute, self.progress_dir = num_shards, redistribute, progress_dir

    def expand(self, pbegin):
        uris = (
            pbegin
            | "Patterns" >> beam.Create([tuple(self.patterns)])
            | "ListAndDeal" >> beam.ParDo(_ExpandFn(self.num_shards, self.progress_dir))
            | "GroupShards" >> beam.GroupByKey()
            | "Unpack" >> beam.FlatMap(lambda shard: (uri for packed in shard[1] for uri in unpack(packed)))
        )
        return uris | "Redistribute" >> beam.Reshuffle() if self.redistribute else uris


class _ReadFn(beam.DoFn):
    def __init__(self, already_tagged: AlreadyTagged | None = None, progress_dir: str | None = None) -> None:
        self.already_tagged, self.progress_dir = already_tagged, progress_dir

    def setup(self) -> None:
        self.skip = self.already_tagged.load() if self.already_tagged else frozenset()
        # Skipped inputs count as done in the launcher's progress line, so its ETA reaches the matched total.
        self.skipped = ProgressFile(self.progress_dir, SKIPPED) if self.progress_dir and self.skip else None

    def process(self, uri: str) -> Iterable:
        try:
            with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
                data = fh.read()
        except Exception as exc:  # missing, permission denied, I/O error: a dead letter, not a dead run
            failure_counter("read").inc()
            message = str(exc).replace("\n", " ")[:500]
            yield beam.pvalue.TaggedOutput(FAILED, Failure(uri, "read", type(exc).__name__, message))
            return
        if not self.skip:
            yield ImageInput(uri, data, None)  # decode hashes it
            return
        digest = hashlib.sha256(data).digest()
        if digest in self.skip:
            if self.skipped:
                self.skipped.add()
            yield beam.pvalue.TaggedOutput(SKIPPED, uri)
            return
        yield ImageInput(uri, data, digest.hex())

    def finish_bundle(self) -> None:
        if self.skipped:
            self.skipped.flush()


class ReadImages(beam.PTransform):
    """URI -> ImageInput | Failure(stage='read') | skipped URI (content already tagged by this model version)."""

    def __init__(self, already_tagged: AlreadyTagged | None = None, progress_dir: str | None = None) -> None:
        super().__init__()
        self.already_tagged, self.progress_dir = already_tagged, progress_dir

    def expand(self, pcoll):
        fn = _ReadFn(self.already_tagged, self.progress_dir)
        result = pcoll | beam.ParDo(fn).with_outputs(FAILED, SKIPPED, main=MAIN)
        return result[MAIN], result[FAILED], result[SKIPPED]
