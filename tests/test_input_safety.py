"""The pieces that keep one input from hurting a run, each on real files: bounded reading, listing that counts
every name, one identity per path, manifests in any encoding, the decode memory budget, staging locks, and the
dead-letter vocabulary the docs explain."""
from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from pipelines.catalog import glob_literal
from pipelines.decode import DecodeError, decode_image
from pipelines.inputs import InputError, check_inputs, expand_patterns
from pipelines.listing import list_local
from pipelines.memory import MemoryBudget, decode_cost
from pipelines.paths import canonical_uri, local_path, printable
from pipelines.reading import ReadError, read_bounded
from pipelines.staging import clean_orphans, lock_run
from schemas.reasons import REASONS, UNEXPECTED
from tests.hostile_corpus import png_stream

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "batch.md")


def _reason(call) -> str:
    with pytest.raises((ReadError, DecodeError)) as info:
        call()
    assert "\n" not in str(info.value)
    return info.value.reason


def test_reading_refuses_special_files_without_blocking_and_oversized_files_without_reading(tmp_path):
    os.mkfifo(tmp_path / "fifo.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    os.symlink(tmp_path / "gone", tmp_path / "dangling.jpg")
    os.symlink(tmp_path / "loop.jpg", tmp_path / "loop.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.jpg"))
    with open(tmp_path / "sparse.jpg", "wb") as fh:
        fh.truncate(5 << 30)
    (tmp_path / "ok.jpg").write_bytes(b"12345")
    start = time.monotonic()
    try:
        got = {name: _reason(lambda: read_bounded(str(tmp_path / name), max_bytes=1 << 20))
               for name in ("fifo.jpg", "zero.jpg", "s.jpg", "dangling.jpg", "loop.jpg", "sparse.jpg")}
        got["dir"] = _reason(lambda: read_bounded(str(tmp_path), max_bytes=1 << 20))
        got["nul"] = _reason(lambda: read_bounded(str(tmp_path / "a\0b"), max_bytes=1 << 20))
    finally:
        sock.close()
    assert got == {"fifo.jpg": "not_a_regular_file", "zero.jpg": "not_a_regular_file", "s.jpg": "not_a_regular_file",
                   "dangling.jpg": "missing", "loop.jpg": "symlink_loop", "sparse.jpg": "too_large",
                   "dir": "not_a_regular_file", "nul": "missing"}
    assert time.monotonic() - start < 5  # nothing blocked, nothing was read
    assert read_bounded(str(tmp_path / "ok.jpg"), max_bytes=5) == b"12345"
    assert _reason(lambda: read_bounded(str(tmp_path / "ok.jpg"), max_bytes=4)) == "too_large"
    assert read_bounded(f"file://{tmp_path}/ok.jpg") == b"12345"


def test_local_listing_counts_every_name_the_glob_matches(tmp_path):
    names = ["a.jpg", "back\\slash.jpg", "new\nline.jpg", "-dash.jpg", "[x].jpg"]
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    os.symlink(tmp_path / "gone", tmp_path / "dangling.jpg")
    os.symlink(tmp_path / "l2.jpg", tmp_path / "l1.jpg")
    os.symlink(tmp_path / "l1.jpg", tmp_path / "l2.jpg")
    os.mkfifo(tmp_path / "fifo.jpg")
    (tmp_path / "dir.jpg").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.jpg").write_bytes(b"x")
    (tmp_path / "other.png").write_bytes(b"x")
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    open(raw, "wb").close()
    jpgs = set(names) | {"dangling.jpg", "l1.jpg", "l2.jpg", "fifo.jpg", "dir.jpg", os.fsdecode(b"caf\xe9.jpg")}
    assert {os.path.basename(p) for p in list_local(f"{tmp_path}/*.jpg")} == jpgs
    assert {os.path.relpath(p, tmp_path) for p in list_local(f"{tmp_path}/**.jpg")} == jpgs | {"sub/deep.jpg"}
    # A bare * lists files, not sub-directories; a directory is listed when the pattern names it.
    assert "sub" not in {os.path.basename(p) for p in list_local(f"{tmp_path}/*")}
    # Every listed name is a valid UTF-8 identity that reads back the same file.
    uris = list(expand_patterns([f"{tmp_path}/*.jpg"]))
    assert len(uris) == len(jpgs) and all(printable(u) == u for u in uris)
    latin = canonical_uri(os.fsdecode(raw))
    assert latin == f"file://{tmp_path}/caf%E9.jpg" and latin in uris and read_bounded(latin) == b""


def test_aliases_are_one_identity():
    assert canonical_uri("a.jpg", "/data") == canonical_uri("./a.jpg", "/data") == "/data/a.jpg"
    assert canonical_uri("sub/../a.jpg", "/data") == canonical_uri("//data//a.jpg") == "/data/a.jpg"
    assert canonical_uri("file:///data/a.jpg") == canonical_uri("file://localhost/data/./a.jpg") == "/data/a.jpg"
    assert canonical_uri("file:///data/a%20b.jpg") == "/data/a b.jpg"
    assert canonical_uri("gs://bucket/x/../a.jpg") == "gs://bucket/x/../a.jpg"  # object names are not paths
    assert local_path(canonical_uri(os.fsdecode(b"/d/\xff.jpg"))) == os.fsdecode(b"/d/\xff.jpg")


def test_manifest_with_bom_crlf_latin1_and_aliases_names_each_file_once(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (archive / name).write_bytes(b"x")
    utf8_name = archive / "café.jpg"  # named in UTF-8 on disk, listed in a Latin-1 manifest
    utf8_name.write_bytes(b"x")
    open(os.path.join(os.fsencode(archive), b"na\xefve.jpg"), "wb").close()  # named in Latin-1 bytes on disk
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfarchive/a.jpg\r\n./archive/a.jpg\r\narchive/x/../b.jpg\r\nfile://"
                    + str(archive).encode() + b"/b.jpg\r\n")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"archive/caf\xe9.jpg\narchive/na\xefve.jpg\n")
    uris = list(expand_patterns([str(bom), str(latin1), f"{archive}/*.jpg"]))
    assert len(uris) == len(set(uris)) == 4
    assert set(uris) == {str(archive / "a.jpg"), str(archive / "b.jpg"), str(utf8_name),
                         f"file://{archive}/na%EFve.jpg"}


def test_a_manifest_that_is_not_a_regular_file_is_a_one_line_error(tmp_path):
    os.mkfifo(tmp_path / "fifo.txt")
    (tmp_path / "dir.txt").mkdir()
    for name in ("fifo.txt", "dir.txt", "missing.txt"):
        with pytest.raises(InputError) as info:
            check_inputs([str(tmp_path / name)])
        assert "\n" not in str(info.value) and name in str(info.value)


def test_decoded_size_limit_is_per_mode_in_bytes():
    grey16, rgb = png_stream(2000, 1500, 0, 16), png_stream(2000, 1500, 2, 8)
    assert decode_cost("I;16", 2000, 1500) > decode_cost("RGB", 2000, 1500)
    limit = decode_cost("RGB", 2000, 1500, data_bytes=len(rgb))  # enough for RGB of that size, not for 16-bit
    assert _reason(lambda: decode_image(grey16, max_decoded_bytes=limit)) == "too_large_decoded"
    assert decode_image(grey16, max_decoded_bytes=4 * limit).image.mode == "RGB"
    assert decode_image(rgb, max_decoded_bytes=limit).width == 2000


def test_memory_budget_makes_big_decodes_wait_for_each_other():
    budget = MemoryBudget(100)
    held, peak, lock = [0], [0], threading.Lock()

    def work(n: int) -> None:
        with budget.reserve(n):
            with lock:
                held[0] += n
                peak[0] = max(peak[0], held[0])
            time.sleep(0.02)
            with lock:
                held[0] -= n

    threads = [threading.Thread(target=work, args=(n,)) for n in (60, 60, 30, 30, 90, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] <= 100 and budget.used == 0
    with pytest.raises(ValueError):
        with budget.reserve(101):
            pass


def test_orphans_are_removed_only_when_their_run_is_dead(tmp_path):
    out = str(tmp_path)
    live = lock_run(out, "live")
    os.makedirs(tmp_path / "_staging" / "live")
    os.makedirs(tmp_path / "_staging" / "dead")
    (tmp_path / "_staging" / "dead.lock").write_text("")
    os.makedirs(tmp_path / "_staging" / "nolock-recent")
    os.makedirs(tmp_path / "_staging" / "nolock-old")
    os.utime(tmp_path / "_staging" / "nolock-old", (0, 0))
    assert clean_orphans(out, "me") == ["dead", "nolock-old"]
    assert sorted(os.listdir(tmp_path / "_staging")) == ["live", "live.lock", "nolock-recent"]
    os.close(live.fd)  # its process died: the kernel dropped the lock, the lock file stayed
    assert clean_orphans(out, "me") == ["live"]
    assert os.listdir(tmp_path / "_staging") == ["nolock-recent"]


def test_catalog_makes_glob_characters_in_the_output_path_literal():
    assert glob_literal("/data/out[2024]/x*?") == "/data/out[[]2024]/x[*][?]"


def test_every_dead_letter_reason_is_explained_in_the_docs():
    docs = open(DOCS, encoding="utf-8").read()
    documented = set(re.findall(r"^\| `(\w+)` \|", docs, re.MULTILINE))
    assert {r for stage in REASONS.values() for r in stage} | {UNEXPECTED} <= documented


def test_an_endless_manifest_line_is_one_bounded_entry(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    manifest = tmp_path / "m.txt"
    manifest.write_bytes(b"x" * (1 << 20) + b"\na.jpg\n")
    uris = list(expand_patterns([str(manifest)]))
    assert uris[1:] == [str(tmp_path / "a.jpg")] and len(uris[0]) < 70_000
    assert _reason(lambda: read_bounded(uris[0])) == "io_error"  # ENAMETOOLONG


def test_manifests_with_cr_only_line_ends_or_utf16_name_every_entry(tmp_path):
    for name in ("a.jpg", "b c.jpg", "ü.jpg"):
        (tmp_path / name).write_bytes(b"x")
    want = [str(tmp_path / n) for n in ("a.jpg", "b c.jpg", "ü.jpg")]
    text = "# classic Mac editor\ra.jpg\rb c.jpg\r\rü.jpg"
    for i, data in enumerate((text.encode(), text.replace("\r", "\r\n").encode("utf-16"),
                              b"\xfe\xff" + text.replace("\r", "\n").encode("utf-16-be"))):
        manifest = tmp_path / f"m{i}.txt"
        manifest.write_bytes(data)
        assert list(expand_patterns([str(manifest)])) == want, data[:20]
    # A CRLF split across read chunks is one line break, not an empty entry plus one.
    long_crlf = tmp_path / "long.txt"
    long_crlf.write_bytes(b"#" * ((1 << 16) - 1) + b"\r\na.jpg\r\n")
    assert list(expand_patterns([str(long_crlf)])) == want[:1]


def test_raw_bytes_are_reserved_from_the_shared_budget_until_the_input_is_done(tmp_path):
    """Reading reserves the file's size before reading and holds it until the caller is done with the bytes:
    threads reading more than the budget at once wait for each other instead of adding up."""
    import contextlib

    for i in range(6):
        (tmp_path / f"{i}.bin").write_bytes(bytes(40_000))
    budget = MemoryBudget(100_000)
    held, peak, lock = [0], [0], threading.Lock()

    def work(i: int) -> None:
        with contextlib.ExitStack() as hold:
            data = read_bounded(str(tmp_path / f"{i}.bin"), budget=budget, hold=hold)
            assert budget.used >= len(data)
            with lock:
                held[0] += len(data)
                peak[0] = max(peak[0], held[0])
            time.sleep(0.02)  # "decoding"
            with lock:
                held[0] -= len(data)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert 40_000 <= peak[0] <= 80_000 and budget.used == 0  # at most two at a time: three exceed 100 000
