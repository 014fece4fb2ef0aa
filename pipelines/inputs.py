"""Where the images come from: globs on any Beam filesystem, or a manifest file listing one URI per line.

Matching runs inside the pipeline, so on a distributed runner the list of URIs never passes through the
launching machine. Every matched or listed name becomes one input under one identity (``pipelines/paths.py``:
``a.jpg``, ``./a.jpg``, ``sub/../a.jpg`` and ``file:///.../a.jpg`` are one input), whatever it names:
local globs are listed by ``pipelines/listing.py`` so dangling links, loops and special files are counted
too. Reading is a DoFn bounded by ``pipelines/reading.py`` so an unreadable, special or oversized path becomes a
dead letter (stage ``read``) with its reason.
"""
from __future__ import annotations

import codecs
import contextlib
import hashlib
import itertools
import os
import re
from typing import BinaryIO, Iterable, Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.incremental import AlreadyTagged
from pipelines.listing import has_glob, list_local
from pipelines.memory import RAW_BUDGET
from pipelines.paths import canonical_uri, is_local, local_path, printable
from pipelines.progress import MATCHED_KIND, ProgressFile
from pipelines.reading import DEFAULT_MAX_BYTES, DEFAULT_READ_TIMEOUT, ReadError, open_regular, read_bounded
from pipelines.records import FAILED, MAIN, ImageInput
from pipelines.transforms import failure_of
from pipelines.uri_shards import DEFAULT_SHARDS, ShardDealer, unpack
from schemas.errors import UserError

MANIFEST_SUFFIXES = (".txt", ".lst", ".list", ".manifest")
SKIPPED = "skipped"
MAX_MANIFEST_BYTES = 1 << 40  # manifests are streamed line by line; only special files are refused
MAX_ENTRY_BYTES = 64 * 1024  # Linux paths are at most 4 KiB


class InputError(UserError):
    """An --input that names nothing or cannot be read."""


def is_manifest(pattern: str) -> bool:
    """A manifest is a plain (non-glob) path ending in .txt/.lst/.list/.manifest."""
    return not has_glob(pattern) and pattern.lower().endswith(MANIFEST_SUFFIXES)


def resolve_entry(manifest_uri: str, entry: str) -> str:
    """The identity of a manifest entry: absolute URIs and paths as they are, relative paths relative to the
    manifest's directory; local paths and ``file://`` URIs normalised (``pipelines.paths.canonical_uri``)."""
    if "://" in entry and not entry.startswith("file://"):
        return entry
    if is_local(manifest_uri):
        return canonical_uri(entry, os.path.dirname(os.path.abspath(local_path(manifest_uri))))
    if entry.startswith("/"):
        return entry
    return FileSystems.join(manifest_uri.rsplit("/", 1)[0], entry)


def check_inputs(patterns: list[str]) -> None:
    """Fail fast, in one line, if a glob matches nothing or a manifest is missing or unreadable."""
    if not patterns:
        raise InputError("no --input given")
    for pattern in patterns:
        shown = printable(pattern)
        if is_local(pattern) and os.path.isdir(local_path(pattern)):
            raise InputError(f"--input {shown} is a directory; pass a glob such as {shown.rstrip('/')}/*.jpg")
        if is_manifest(pattern):
            open_manifest(pattern).close()
            continue
        try:
            found = next(iter(_list(pattern)), None)
        except Exception as exc:  # noqa: BLE001 - BeamIOError for unknown schemes, permission problems...
            raise InputError(f"cannot list --input {shown}: {printable(str(exc))}") from exc
        if found is None:
            raise InputError(f"--input {shown} matched no files")


def open_manifest(manifest_uri: str) -> BinaryIO:
    """The manifest as a binary file, opened like an image (a regular file only); one-line InputError if not."""
    try:
        if is_local(manifest_uri):
            return os.fdopen(open_regular(local_path(manifest_uri), MAX_MANIFEST_BYTES, printable(manifest_uri)), "rb")
        if not FileSystems.exists(manifest_uri):
            raise ReadError("missing", f"{manifest_uri} does not exist")
        return FileSystems.open(manifest_uri, compression_type=CompressionTypes.UNCOMPRESSED)
    except ReadError as exc:
        raise InputError(f"manifest {exc} ({exc.reason})") from exc


def read_manifest(manifest_uri: str) -> Iterator[str]:
    """The URIs a manifest lists: one per line, blank lines and ``#`` comments skipped, relative entries resolved.

    An entry is its line without the line break and surrounding whitespace. Manifests are UTF-8 (a byte-order
    mark is dropped; LF, CRLF and CR line ends) or UTF-16 with its byte-order mark. A line that is not UTF-8 (a Latin-1 manifest) is decoded with
    ``surrogateescape``, which names the file whose name is exactly those bytes (Linux names are bytes); if
    no such file exists but one named by the Latin-1 reading of the line does, that one is meant."""
    with open_manifest(manifest_uri) as fh:
        for n, raw in enumerate(_lines(fh)):
            if n == 0:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            entry = raw.decode("utf-8", "surrogateescape").strip()
            if entry and not entry.startswith("#"):
                yield _resolve_encoded(manifest_uri, entry, raw)


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_READ_CHUNK = 1 << 16
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def _lines(fh: BinaryIO) -> Iterator[bytes]:
    """Lines ended by LF, CRLF or a lone CR (classic Mac editors), without their break, each of at most
    MAX_ENTRY_BYTES (the rest of a longer line is skipped: no path is that long, and the entry then fails to
    open with a reason), so one endless line cannot fill the listing worker's memory."""
    tail, skipping = b"", False
    for chunk in _utf8_chunks(fh):
        data = tail + chunk
        cut = len(data) - 1 if data.endswith(b"\r") else len(data)  # a CR may be the first half of a CRLF
        *lines, tail = _LINE_BREAK.split(data[:cut])
        tail += data[cut:]
        for line in lines:
            if skipping:  # the rest of an over-long line
                skipping = False
                continue
            yield line
        if len(tail) > MAX_ENTRY_BYTES:
            if not skipping:
                yield tail[:MAX_ENTRY_BYTES]
            tail, skipping = b"", True
    if tail and not skipping:
        yield tail


def _utf8_chunks(fh: BinaryIO) -> Iterator[bytes]:
    """The manifest's bytes; a UTF-16 manifest (byte-order mark first: Windows Notepad's "Unicode") is
    decoded and re-encoded as UTF-8 on the way, so its lines read like any other manifest's."""
    chunk = fh.read(_READ_CHUNK)
    if not chunk.startswith(_UTF16_BOMS):
        while chunk:
            yield chunk
            chunk = fh.read(_READ_CHUNK)
        return
    decoder = codecs.getincrementaldecoder("utf-16")("replace")
    while chunk:
        yield decoder.decode(chunk).encode("utf-8")
        chunk = fh.read(_READ_CHUNK)
    yield decoder.decode(b"", final=True).encode("utf-8")


def _resolve_encoded(manifest_uri: str, entry: str, raw: bytes) -> str:
    uri = resolve_entry(manifest_uri, entry)
    if printable(entry) == entry or not is_local(uri) or os.path.lexists(local_path(uri)):
        return uri
    latin1 = resolve_entry(manifest_uri, raw.decode("latin-1").strip())
    return latin1 if os.path.lexists(local_path(latin1)) else uri


def _list(pattern: str) -> Iterator[str]:
    """Every URI a glob (or plain path) names: local ones by pipelines.listing, others by Beam's filesystems."""
    if is_local(pattern):
        return (canonical_uri(p) for p in list_local(local_path(canonical_uri(pattern))))
    return (m.path for m in FileSystems.match([pattern])[0].metadata_list)


def expand_patterns(patterns: list[str]) -> Iterator[str]:
    """Every URI the patterns name, each once, in listing order.

    A single glob cannot name a file twice, so only several patterns or a manifest pay for the set of seen
    URIs (about 150 bytes per URI, held by this one step while it lists)."""
    uris = itertools.chain.from_iterable(read_manifest(p) if is_manifest(p) else _list(p) for p in patterns)
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
    def __init__(self, already_tagged: AlreadyTagged | None = None, progress_dir: str | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = DEFAULT_READ_TIMEOUT) -> None:
        self.already_tagged, self.progress_dir = already_tagged, progress_dir
        self.max_bytes, self.timeout = max_bytes, timeout

    def setup(self) -> None:
        if self.max_bytes > RAW_BUDGET.total:  # a raised --max-bytes must fit one input in the shared budget
            RAW_BUDGET.resize(self.max_bytes)
        self.skip = self.already_tagged.load() if self.already_tagged else frozenset()
        # Skipped inputs count as done in the launcher's progress line, so its ETA reaches the matched total.
        self.skipped = ProgressFile(self.progress_dir, SKIPPED) if self.progress_dir and self.skip else None

    def process(self, uri: str) -> Iterable:
        # The raw bytes stay reserved from RAW_BUDGET while the fused downstream steps decode and preprocess
        # them (a fused stage hands each output on before the yield returns).
        with contextlib.ExitStack() as hold:
            yield from self._read(uri, hold)

    def _read(self, uri: str, hold: contextlib.ExitStack) -> Iterable:
        try:
            data = read_bounded(uri, self.max_bytes, self.timeout, budget=RAW_BUDGET, hold=hold)
        except Exception as exc:  # noqa: BLE001 - missing, special, oversized...: a dead letter, not a dead run
            yield beam.pvalue.TaggedOutput(FAILED, failure_of(uri, "read", exc, "io_error"))
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

    def __init__(self, already_tagged: AlreadyTagged | None = None, progress_dir: str | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, timeout: float = DEFAULT_READ_TIMEOUT) -> None:
        super().__init__()
        self.already_tagged, self.progress_dir = already_tagged, progress_dir
        self.max_bytes, self.timeout = max_bytes, timeout

    def expand(self, pcoll):
        fn = _ReadFn(self.already_tagged, self.progress_dir, self.max_bytes, self.timeout)
        result = pcoll | beam.ParDo(fn).with_outputs(FAILED, SKIPPED, main=MAIN)
        return result[MAIN], result[FAILED], result[SKIPPED]
