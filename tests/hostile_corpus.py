"""Generators of hostile archive entries, one per class of input an archive can hold.

``build_hostile_corpus(root)`` lays out ``root/archive/`` (entries reached by the glob ``archive/*.jpg``) and
manifests that list aliases, missing entries and special files, and returns what must happen to every input:
``{identity: outcome}`` where identity is the printable canonical path (what ``image_uri`` holds) and outcome
is ``"tagged"``, ``(stage, reason)``, or ``None`` when either is acceptable (fuzzed bytes) as long as the input
is accounted for exactly once. Every generator derives its bytes from a seed, so a failure reproduces.

The classes: special files (FIFO, socket, directory named *.jpg, symlink to /dev/zero), links (dangling,
loops, to a good image), names (not UTF-8, backslash, newline, tab, spaces, leading dashes, quotes,
percent, non-Latin), bombs per format (headers claiming huge sizes for PNG/GIF/JPEG/TIFF/WebP; real
8000x8000 high-bit-depth PNG and TIFF streams a few KB long), truncated and garbage streams, EXIF fuzz (wrong
tag types, bad offsets), huge sparse files, and manifest aliases (``./a``, ``sub/../a``, ``file://``, BOM,
CRLF, Latin-1, NUL, missing entries, non-regular entries).
"""
from __future__ import annotations

import io
import os
import random
import socket
import struct
import zlib
from dataclasses import dataclass, field


from pipelines.paths import canonical_uri, printable
from tests.synthetic import encode, make_sample

TOO_MANY = ("decode", "too_many_pixels")
TOO_LARGE_DECODED = ("decode", "too_large_decoded")
NOT_REGULAR = ("read", "not_a_regular_file")


@dataclass
class Corpus:
    root: str
    archive: str
    patterns: list[str]
    expected: dict[str, object] = field(default_factory=dict)
    sockets: list[socket.socket] = field(default_factory=list)

    def path(self, name: str | bytes) -> str | bytes:
        if isinstance(name, bytes):
            return os.path.join(os.fsencode(self.archive), name)
        return os.path.join(self.archive, name)

    def expect(self, path: str | bytes, outcome) -> None:
        identity = printable(canonical_uri(os.fsdecode(path)))
        assert identity not in self.expected, f"generator bug: {identity} twice"
        self.expected[identity] = outcome

    def write(self, name: str | bytes, data: bytes, outcome) -> None:
        path = self.path(name)
        with open(path, "wb") as fh:
            fh.write(data)
        self.expect(path, outcome)

    def close(self) -> None:
        for s in self.sockets:
            s.close()


# ------------------------------------------------------------------------------------------------ encoders
def good_image(seed: int, size: tuple[int, int] = (64, 48), fmt: str = "JPEG") -> bytes:
    img = make_sample(random.Random(seed), size).image
    if fmt == "JPEG":
        return encode(img)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_stream(width: int, height: int, color_type: int, bit_depth: int, fill: int = 0) -> bytes:
    """A valid PNG of constant rows, however large, in a few KB: the zlib stream of identical rows compresses
    ~1000:1, so the file is tiny and decoding it allocates the full image."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = b"\x00" + bytes([fill]) * (width * channels * bit_depth // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def tiff_strip_reuse(width: int, height: int, bits: int, sample_format: int, samples: int = 1) -> bytes:
    """An uncompressed TIFF whose every strip points at the same one-row block: ``height`` rows decode from
    ``width * bits/8 * samples`` bytes of data (sample_format 1 uint, 2 int, 3 float)."""
    row = bytes(width * samples * bits // 8)
    header = 8
    n_tags = 11 if samples == 1 else 12
    ifd_size = 2 + n_tags * 12 + 4
    offsets_at = header + ifd_size
    counts_at = offsets_at + 4 * height
    bits_at = counts_at + 4 * height
    data_at = bits_at + 2 * samples
    tags = [
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, samples, bits if samples == 1 else bits_at),
        (259, 3, 1, 1), (262, 3, 1, 1 if samples == 1 else 2), (273, 4, height, offsets_at),
        (277, 3, 1, samples), (278, 4, 1, 1), (279, 4, height, counts_at), (284, 3, 1, 1),
        (339, 3, 1, sample_format),
    ]
    if samples == 4:
        tags.append((338, 3, 1, 2))  # ExtraSamples: unassociated alpha
    tags.sort()
    out = bytearray(b"II*\x00" + struct.pack("<I", header) + struct.pack("<H", len(tags)))
    for tag, typ, count, value in tags:
        if typ == 3 and count == 1:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0)
    assert len(out) == offsets_at
    out += struct.pack(f"<{height}I", *([data_at] * height))
    out += struct.pack(f"<{height}I", *([len(row)] * height))
    out += struct.pack(f"<{samples}H", *([bits] * samples))
    return bytes(out) + row


def claim_size(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """A valid small image of ``fmt`` whose header claims ``width`` x ``height`` (a bomb by its header)."""
    b = bytearray(data)
    if fmt == "PNG":
        i = b.index(b"IHDR")
        b[i + 4:i + 12] = struct.pack(">II", width, height)
        b[i + 17:i + 21] = struct.pack(">I", zlib.crc32(bytes(b[i:i + 17])) & 0xFFFFFFFF)
    elif fmt == "GIF":
        b[6:10] = struct.pack("<HH", width, height)
        i = b.index(b"\x2c")  # image descriptor
        b[i + 5:i + 9] = struct.pack("<HH", width, height)
    elif fmt == "JPEG":
        i = b.index(b"\xff\xc0")
        b[i + 5:i + 9] = struct.pack(">HH", height, width)
    elif fmt == "WEBP":
        i = b.index(b"VP8 ")
        b[i + 14:i + 18] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    elif fmt == "TIFF":
        return tiff_strip_reuse(width, height, 8, 1)
    return bytes(b)


def exif_block(entries: list[tuple[int, int, int, bytes]], ifd_offset: int = 8) -> bytes:
    """A raw EXIF (TIFF-structured) block with the given (tag, type, count, value-or-offset bytes) entries."""
    out = bytearray(b"Exif\x00\x00II*\x00" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        out += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\x00")[:4]
    out += struct.pack("<I", 0)
    return bytes(out)


def with_exif(jpeg: bytes, exif: bytes) -> bytes:
    """``jpeg`` with an APP1 segment holding ``exif`` right after SOI."""
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:]


# ----------------------------------------------------------------------------------------------- generators
def special_files(c: Corpus) -> None:
    os.mkfifo(c.path("fifo.jpg"))
    c.expect(c.path("fifo.jpg"), NOT_REGULAR)
    os.symlink("/dev/zero", c.path("zero.jpg"))
    c.expect(c.path("zero.jpg"), NOT_REGULAR)
    os.mkdir(c.path("directory.jpg"))
    c.expect(c.path("directory.jpg"), NOT_REGULAR)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(c.path("socket.jpg"))
    c.sockets.append(sock)
    c.expect(c.path("socket.jpg"), NOT_REGULAR)


def links(c: Corpus) -> None:
    os.symlink(c.path("no-such-target.jpg"), c.path("dangling.jpg"))
    c.expect(c.path("dangling.jpg"), ("read", "missing"))
    os.symlink(c.path("loop_b.jpg"), c.path("loop_a.jpg"))
    os.symlink(c.path("loop_a.jpg"), c.path("loop_b.jpg"))
    os.symlink(c.path("self.jpg"), c.path("self.jpg"))
    for name in ("loop_a.jpg", "loop_b.jpg", "self.jpg"):
        c.expect(c.path(name), ("read", "symlink_loop"))
    c.write("target.jpg", good_image(1), "tagged")
    os.symlink("target.jpg", c.path("link_to_good.jpg"))  # a second name of a good file: its own input
    c.expect(c.path("link_to_good.jpg"), "tagged")


ODD_NAMES: list[str | bytes] = [
    b"caf\xe9-latin1.jpg", b"\xff\xfe-invalid.jpg", "back\\slash.jpg", "new\nline.jpg", "tab\there.jpg",
    " leading space.jpg", "trailing space .jpg", "-leading-dash.jpg", "--help.jpg", "quote'\"s.jpg",
    "%41%2F percent.jpg", "#hash;semi.jpg", "日本語 ü.jpg", "a" * 200 + ".jpg", "*star?.jpg", "[brackets].jpg",
]


def odd_names(c: Corpus) -> None:
    for i, name in enumerate(ODD_NAMES):
        c.write(name, good_image(100 + i), "tagged")


def bombs(c: Corpus) -> None:
    small = {fmt: good_image(7, (32, 24), fmt) for fmt in ("PNG", "GIF", "JPEG", "WEBP")}
    for fmt, data in small.items():
        c.write(f"claims_huge_{fmt.lower()}.jpg", claim_size(data, fmt, 60_000, 60_000)
                if fmt != "WEBP" else claim_size(data, fmt, 16_383, 16_383), TOO_MANY)
    c.write("claims_huge_tiff.jpg", claim_size(b"", "TIFF", 100_000, 100_000), TOO_MANY)
    # Within the pixel limit, over the decode memory limit by their mode's bytes per pixel.
    c.write("rgba_8000.png.jpg", png_stream(8000, 8000, 6, 8), TOO_LARGE_DECODED)
    c.write("grey16_8000.png.jpg", png_stream(8000, 8000, 0, 16), TOO_LARGE_DECODED)
    c.write("float_8000.tif.jpg", tiff_strip_reuse(8000, 8000, 32, 3), TOO_LARGE_DECODED)
    c.write("int32_8000.tif.jpg", tiff_strip_reuse(8000, 8000, 32, 2), TOO_LARGE_DECODED)
    c.write("rgba_8000.tif.jpg", tiff_strip_reuse(8000, 8000, 8, 1, samples=4), TOO_LARGE_DECODED)
    # Big but within every limit: decoded (one at a time through the shared budget) and tagged.
    c.write("rgb_6000.png.jpg", png_stream(6000, 6000, 2, 8, fill=90), "tagged")
    c.write("grey16_1200.png.jpg", png_stream(1200, 900, 0, 16, fill=120), "tagged")
    c.write("float_1000.tif.jpg", tiff_strip_reuse(1000, 700, 32, 3), "tagged")


def broken_streams(c: Corpus, seed: int = 5) -> None:
    rng = random.Random(seed)
    c.write("empty.jpg", b"", ("decode", "empty"))
    c.write("text.jpg", b"not an image\n" * 50, ("decode", "not_an_image"))
    c.write("random.jpg", rng.randbytes(5000), None)
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"):
        data = good_image(11, (96, 64), fmt)
        c.write(f"truncated_{fmt.lower()}.jpg", data[: len(data) // 2], None)
        c.write(f"magic_then_garbage_{fmt.lower()}.jpg", data[:16] + rng.randbytes(3000), None)
        flipped = bytearray(data)
        for _ in range(20):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        c.write(f"bitflipped_{fmt.lower()}.jpg", bytes(flipped), None)


def exif_fuzz(c: Corpus, seed: int = 9) -> None:
    rng = random.Random(seed)
    jpeg = good_image(21, (80, 60))
    # The one seen on main: orientation 6 plus a StripOffsets tag of type ASCII (exif_transpose: struct.error).
    known = exif_block([(0x0112, 3, 1, struct.pack("<H", 6)), (0x0111, 2, 4, b"abc\x00")])
    c.write("exif_stripoffsets_ascii.jpg", with_exif(jpeg, known), "tagged")
    wrong_orientation = [(2, 4, b"6\x00\x00\x00"), (5, 1, struct.pack("<I", 4000)), (4, 1, struct.pack("<I", 9)),
                         (3, 0, b""), (3, 2**31, struct.pack("<H", 6)), (12, 1, b"\xff" * 4)]
    for i, (typ, count, value) in enumerate(wrong_orientation):
        c.write(f"exif_orientation_{i}.jpg", with_exif(jpeg, exif_block([(0x0112, typ, count, value)])), "tagged")
    for i in range(12):
        entries = [(rng.choice([0x0112, 0x0111, 0x8769, 0x8825, 0x0117, 0x927C, rng.randrange(65536)]),
                    rng.randrange(0, 14), rng.choice([0, 1, 2, 255, 2**31]), rng.randbytes(4)) for _ in range(6)]
        c.write(f"exif_random_{i}.jpg", with_exif(jpeg, exif_block(entries, rng.choice([8, 4, 2**31]))), None)


def sparse_files(c: Corpus) -> None:
    with open(c.path("sparse_3gib.jpg"), "wb") as fh:
        fh.truncate(3 << 30)
    c.expect(c.path("sparse_3gib.jpg"), ("read", "too_large"))
    with open(c.path("sparse_8mib.jpg"), "wb") as fh:
        fh.truncate(8 << 20)
    c.expect(c.path("sparse_8mib.jpg"), ("decode", "not_an_image"))


def manifests(c: Corpus) -> None:
    """Aliases of archive entries (counted once with the glob), missing and special entries, encodings."""
    sub = os.path.join(c.archive, "sub")
    os.mkdir(sub)
    c.write(os.path.join("sub", "nested.jpg"), good_image(31), "tagged")  # only the manifests name it
    aliases = ["archive/target.jpg", "./archive/target.jpg", "archive/sub/../target.jpg", "archive//target.jpg",
               f"file://{c.archive}/target.jpg", f"file://localhost{c.archive}/sub/nested.jpg",
               "archive/sub/nested.jpg", f"{c.archive}/./sub/nested.jpg", "archive/fifo.jpg", "archive/zero.jpg",
               "archive/directory.jpg", "archive/dangling.jpg", "  archive/text.jpg  "]
    missing = ["archive/not-there.jpg", "archive/sub/deeper/none.jpg", "file:///nonexistent/x.jpg"]
    lines = ["# tonight, saved by a Windows editor: BOM and CRLF", *aliases, "", *missing]
    utf8 = os.path.join(c.root, "tonight.txt")
    with open(utf8, "wb") as fh:
        fh.write(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    for entry in missing:
        c.expect(canonical_uri(entry.removeprefix("file://"), c.root), ("read", "missing"))
    latin1 = os.path.join(c.root, "latin1.lst")
    with open(latin1, "wb") as fh:
        fh.write(b"archive/caf\xe9-latin1.jpg\narchive/na\xefve-missing.jpg\narchive/nul\x00byte.jpg\n")
    c.expect(canonical_uri(os.fsdecode(b"archive/na\xefve-missing.jpg"), c.root), ("read", "missing"))
    c.expect(canonical_uri("archive/nul\x00byte.jpg", c.root), ("read", "missing"))
    c.patterns += [utf8, latin1]


GENERATORS = (special_files, links, odd_names, bombs, broken_streams, exif_fuzz, sparse_files, manifests)


def build_hostile_corpus(root: str) -> Corpus:
    archive = os.path.join(root, "archive")
    os.makedirs(archive)
    corpus = Corpus(root, archive, [os.path.join(archive, "*.jpg")])
    for generate in GENERATORS:
        generate(corpus)
    return corpus
