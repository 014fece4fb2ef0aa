"""Matched URIs cross the job's one stage boundary in a few compressed shards, not one element each.

Why: Beam's in-process runner ships every element that crosses a stage boundary through gRPC and keeps it
until the next stage has run. Measured on Beam 2.77 (``bench/stage_boundary_memory.py``): about 1.5 KB of
resident memory per URI through ``Distinct``, so peak memory grew with the archive. A shard is a
zlib-compressed block of length-prefixed URIs (archive paths share long prefixes, so a shard costs a few bytes
per URI). Any Python string round-trips: names that are not UTF-8 (``surrogateescape``), newlines, and even
a NUL that a hand-written manifest line may hold (that input is then dead-lettered as missing, not lost).

URIs are dealt round-robin over ``num_shards`` keys. The runner hands grouped keys to its workers
round-robin too, so any worker count that divides ``num_shards`` gets an equal share, to one image.
"""
from __future__ import annotations

import struct
import zlib
from typing import Iterable, Iterator

DEFAULT_SHARDS = 64
SHARD_FLUSH_URIS = 4096  # a full shard is emitted early, so the dealer's buffers stay bounded


def pack(uris: list[str]) -> bytes:
    """URIs -> one compressed shard: a count, the UTF-8 lengths, then the UTF-8 bytes (lone surrogates kept)."""
    encoded = [uri.encode("utf-8", "surrogatepass") for uri in uris]
    header = struct.pack(f"<Q{len(encoded)}Q", len(encoded), *map(len, encoded))
    return zlib.compress(header + b"".join(encoded), 1)


def unpack(shard: bytes) -> list[str]:
    """One compressed shard -> its URIs, in the order they were dealt."""
    raw = zlib.decompress(shard)
    (count,) = struct.unpack_from("<Q", raw)
    lengths = struct.unpack_from(f"<{count}Q", raw, 8)
    uris, pos = [], 8 + 8 * count
    for n in lengths:
        uris.append(raw[pos : pos + n].decode("utf-8", "surrogatepass"))
        pos += n
    return uris


class ShardDealer:
    """Deals URIs round-robin into ``num_shards`` buffers; yields ``(shard, packed)`` as buffers fill.

    Full buffers fill in shard order (0, 1, 2, ...) and :meth:`flush` emits the rest in shard order, so a runner
    that groups keys in arrival order sees them as 0..num_shards-1.
    """

    def __init__(self, num_shards: int = DEFAULT_SHARDS, flush_at: int = SHARD_FLUSH_URIS) -> None:
        if num_shards < 1 or flush_at < 1:
            raise ValueError("num_shards and flush_at must be positive")
        self.num_shards, self.flush_at = num_shards, flush_at
        self._buffers: list[list[str]] = [[] for _ in range(num_shards)]
        self.dealt = 0

    def deal(self, uris: Iterable[str]) -> Iterator[tuple[int, bytes]]:
        for uri in uris:
            shard = self.dealt % self.num_shards
            self.dealt += 1
            buffer = self._buffers[shard]
            buffer.append(uri)
            if len(buffer) >= self.flush_at:
                yield shard, pack(buffer)
                self._buffers[shard] = []

    def flush(self) -> Iterator[tuple[int, bytes]]:
        for shard, buffer in enumerate(self._buffers):
            if buffer:
                yield shard, pack(buffer)
        self._buffers = [[] for _ in range(self.num_shards)]
