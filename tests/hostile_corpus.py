"""Generators of hostile archive entries, one per class of input an archive can hold.

``build_hostile_corpus(root)`` lays out ``root/archive/`` (entries reached by the glob ``archive/*.jpg``) and
manifests that list aliases, missing entries and special files, and returns what must happen to every input:
``{identity: outcome}`` where identity is the printable canonical path (what ``image_uri`` holds) and outcome
is ``"tagged"``, ``(stage, reason)``, a frozenset of acceptable outcomes, or ``None`` when any is acceptable
(fuzzed bytes) as long as the input is accounted for exactly once. Every generator derives its bytes from a
seed, so a failure reproduces.

The classes: special files (FIFO, socket, directory named *.jpg, symlink to /dev/zero), links (dangling,
loops, to a good image), names (not UTF-8, backslash, newline, tab, spaces, leading dashes, quotes,
percent, non-Latin), bombs per format (headers claiming huge sizes for PNG/GIF/JPEG/TIFF/WebP; real
8000x8000 high-bit-depth PNG and TIFF streams a few KB long), truncated and garbage streams, EXIF fuzz (wrong
tag types, bad offsets), huge sparse files, and manifest aliases (``./a``, ``sub/../a``, ``file://``, BOM,
CRLF, Latin-1, NUL, missing entries, non-regular entries). Then: animations with thousands of frames
(GIF, APNG, WebP) and multi-page TIFF; every pixel mode (1, L, LA, P, I, I;16, F, CMYK, YCbCr, LAB, RGBA);
formats Pillow opens or not that are not tagged (ICO, PCX, TGA, PPM, SGI, EPS, PDF, XBM, DDS, QOI, IM,
JPEG 2000, PSD, SVG, HEIC/AVIF boxes, 1-byte files); metadata bombs (16 MiB ICC, 300 XMP segments, 20 MiB
trailing bytes, PNG tEXt/zTXt/iTXt/iCCP bombs, 5000 text chunks); headers that lie about their data; hard
links, Unicode normalisation twins, 255-byte names, CR in names, a ~4000-byte path, a path over PATH_MAX,
and a CR-only manifest.
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


# ------------------------------------------------------------------------------------ more classes (issue 9c)
UNSUPPORTED = frozenset({("decode", "unsupported_format"), ("decode", "not_an_image")})
TAGGED_OR_CORRUPT = frozenset({"tagged", ("decode", "corrupt")})


def _pil(img, fmt: str, **save_args) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_args)
    return buf.getvalue()


def animations(c: Corpus) -> None:
    """Thousands of frames or pages: only the first is decoded, so each costs what one frame costs."""
    from PIL import Image

    frames = [Image.new("P", (32, 24), i % 250) for i in range(2000)]
    for img in frames:
        img.putpalette([v for i in range(256) for v in (i, 255 - i, (i * 7) % 256)])
    c.write("gif_2000_frames.jpg", _pil(frames[0], "GIF", save_all=True, append_images=frames[1:],
                                        duration=10, loop=0), "tagged")
    rgb = [f.convert("RGB") for f in frames[:500]]
    c.write("apng_300_frames.jpg", _pil(rgb[0], "PNG", save_all=True, append_images=rgb[1:300]), "tagged")
    c.write("webp_200_frames.jpg", _pil(rgb[0], "WEBP", save_all=True, append_images=rgb[1:200],
                                        quality=10, method=0), "tagged")
    c.write("tiff_500_pages.jpg", _pil(rgb[0], "TIFF", save_all=True, append_images=rgb[1:]), "tagged")


def modes(c: Corpus) -> None:
    """Every pixel mode an archive can hold: 1, L, LA, P (+transparency), I, I;16, F, CMYK, YCbCr, LAB, RGBA."""
    base = make_sample(random.Random(61), (64, 48)).image
    cases = {
        "mode_1.png": ("1", "PNG"), "mode_l.jpg": ("L", "JPEG"), "mode_la.png": ("LA", "PNG"),
        "mode_p.gif": ("P", "GIF"), "mode_i.tif": ("I", "TIFF"), "mode_i16.png": ("I;16", "PNG"),
        "mode_i16.tif": ("I;16", "TIFF"), "mode_f.tif": ("F", "TIFF"), "mode_cmyk.jpg": ("CMYK", "JPEG"),
        "mode_cmyk.tif": ("CMYK", "TIFF"), "mode_ycbcr.tif": ("YCbCr", "TIFF"), "mode_lab.tif": ("LAB", "TIFF"),
        "mode_rgba.webp": ("RGBA", "WEBP"), "mode_rgba.tif": ("RGBA", "TIFF"), "mode_1.bmp": ("1", "BMP"),
        "mode_p.bmp": ("P", "BMP"), "mode_rgba.bmp": ("RGBA", "BMP"),
    }
    for name, (mode, fmt) in cases.items():
        img = base.convert("L").convert(mode) if mode.startswith("I") or mode == "F" else base.convert(mode)
        # Pillow 12 writes YCbCr TIFF strips it cannot read back: either outcome, but one of them.
        c.write(f"{name}.jpg", _pil(img, fmt), TAGGED_OR_CORRUPT if mode == "YCbCr" else "tagged")
    transparent = base.convert("P")
    c.write("mode_p_transparent.png.jpg", _pil(transparent, "PNG", transparency=0), "tagged")
    c.write("progressive.jpg", _pil(base, "JPEG", progressive=True), "tagged")
    c.write("grey_alpha_16.png.jpg", png_stream(64, 48, 4, 16, fill=77), "tagged")


def other_formats(c: Corpus) -> None:
    """Formats Pillow opens (or not) that the platform does not tag: one dead letter each, never a crash."""
    base = make_sample(random.Random(62), (64, 48)).image
    for fmt in ("ICO", "PCX", "TGA", "PPM", "SGI", "EPS", "PDF", "XBM", "DDS", "QOI", "IM", "JPEG2000"):
        try:
            data = _pil(base.convert("1") if fmt == "XBM" else base, fmt)
        except (KeyError, OSError, ValueError):  # this Pillow build cannot write it
            continue
        c.write(f"format_{fmt.lower()}.jpg", data, UNSUPPORTED)
    psd = (b"8BPS" + struct.pack(">H6sHIIHH", 1, b"", 3, 48, 64, 8, 3) + struct.pack(">III", 0, 0, 0)
           + struct.pack(">H", 0) + bytes(3 * 48 * 64))
    c.write("format_psd.jpg", psd, UNSUPPORTED | {("decode", "corrupt")})
    c.write("format_svg.jpg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9e9" height="9e9"/>', UNSUPPORTED)
    heic = struct.pack(">I", 24) + b"ftypheic" + b"\x00" * 4 + b"mif1heic" + bytes(4000)
    c.write("format_heic.jpg", heic, UNSUPPORTED | {("decode", "corrupt")})
    avif = struct.pack(">I", 24) + b"ftypavif" + b"\x00" * 4 + b"mif1avif" + bytes(4000)
    c.write("format_avif_garbage.jpg", avif, UNSUPPORTED | {("decode", "corrupt")})
    c.write("one_byte.jpg", b"\xff", ("decode", "not_an_image"))
    c.write("jpeg_soi_only.jpg", b"\xff\xd8", None)


def metadata_bombs(c: Corpus) -> None:
    """Huge or self-expanding metadata around a good image: ICC, XMP, comments, PNG text and zTXt bombs."""
    base = make_sample(random.Random(63), (64, 48)).image
    rng = random.Random(64)
    c.write("icc_16mib.jpg", _pil(base, "JPEG", icc_profile=rng.randbytes(16 << 20)), "tagged")
    app1 = b"\xff\xe1" + struct.pack(">H", 65535) + b"http://ns.adobe.com/xap/1.0/\x00" + bytes(65533 - 29)
    jpeg = _pil(base, "JPEG")
    c.write("xmp_300_segments.jpg", jpeg[:2] + app1 * 300 + jpeg[2:], "tagged")
    c.write("trailing_20mib.jpg", jpeg + rng.randbytes(20 << 20), "tagged")
    png = _pil(base, "PNG")
    end = png.index(b"IDAT") - 4
    zeros = zlib.compressobj(9)
    bomb = zeros.compress(bytes(64 << 20)) + zeros.flush()  # 64 MiB of text in ~64 KB
    chunks = {
        "png_text_8mib": _chunk(b"tEXt", b"Comment\x00" + b"x" * (8 << 20)),
        "png_ztxt_bomb": _chunk(b"zTXt", b"Comment\x00\x00" + bomb),
        "png_itxt_bomb": _chunk(b"iTXt", b"Comment\x00\x01\x00\x00\x00" + bomb),
        "png_iccp_bomb": _chunk(b"iCCP", b"icc\x00\x00" + bomb),
        "png_5000_text_chunks": b"".join(_chunk(b"tEXt", b"k%d\x00" % i + b"v" * 1000) for i in range(5000)),
    }
    for name, chunk in chunks.items():
        c.write(f"{name}.jpg", png[:end] + chunk + png[end:], TAGGED_OR_CORRUPT)


def lying_headers(c: Corpus) -> None:
    """Headers that disagree with the data: sizes within the limits but no data, offsets past the end."""
    c.write("bmp_claims_8000_no_data.jpg", b"BM" + struct.pack("<IHHI", 0, 0, 0, 54)
            + struct.pack("<IiiHHIIiiII", 40, 8000, 8000, 1, 24, 0, 0, 0, 0, 0, 0) + bytes(100), None)
    c.write("tiff_claims_4000_one_row.jpg", tiff_strip_reuse(4000, 3000, 8, 1)[:-3000], None)
    c.write("png_idat_longer_than_image.jpg", png_stream(64, 48, 2, 8)[:33]
            + _chunk(b"IDAT", zlib.compress(bytes(50 << 20), 9)) + _chunk(b"IEND", b""), TAGGED_OR_CORRUPT)


def more_names(c: Corpus) -> None:
    """Hard links, Unicode normalisation variants (two files), a 255-byte name, CR in a name, a path of ~4000
    bytes (listed by a manifest), and a manifest entry longer than any path the system allows."""
    c.write("hard_target.jpg", good_image(71), "tagged")
    os.link(c.path("hard_target.jpg"), c.path("hard_link.jpg"))
    c.expect(c.path("hard_link.jpg"), "tagged")
    c.write("caf\u00e9-nfc.jpg", good_image(72), "tagged")
    c.write("cafe\u0301-nfc.jpg", good_image(73), "tagged")
    c.write("n" * 251 + ".jpg", good_image(74), "tagged")
    c.write("carriage\rreturn.jpg", good_image(75), "tagged")
    c.write(".hidden.jpg", good_image(76), "tagged")
    deep = os.path.join(c.root, "deep", *(["d" * 60] * 62))
    os.makedirs(deep)
    deep_file = os.path.join(deep, "deep.jpg")
    with open(deep_file, "wb") as fh:
        fh.write(good_image(77))
    c.expect(deep_file, "tagged")
    too_long = os.path.join(c.root, "x" * 5000 + ".jpg")
    c.expect(too_long, ("read", "io_error"))
    manifest = os.path.join(c.root, "cr_only.lst")  # classic Mac line ends: each CR ends an entry
    with open(manifest, "wb") as fh:
        fh.write(b"\r".join([b"# CR-only", deep_file.encode(), too_long.encode(), b"archive/hard_link.jpg",
                             b"archive/cr-only-missing.jpg", b""]))
    c.expect(os.path.join(c.archive, "cr-only-missing.jpg"), ("read", "missing"))
    c.patterns.append(manifest)


GENERATORS = (special_files, links, odd_names, bombs, broken_streams, exif_fuzz, sparse_files, manifests,
              animations, modes, other_formats, metadata_bombs, lying_headers, more_names)


def build_hostile_corpus(root: str) -> Corpus:
    archive = os.path.join(root, "archive")
    os.makedirs(archive)
    corpus = Corpus(root, archive, [os.path.join(archive, "*.jpg")])
    for generate in GENERATORS:
        generate(corpus)
    return corpus
