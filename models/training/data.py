"""Training data: read a labels manifest (CSV, Parquet, COCO JSON or VOC folder) and check it row by row.

Every problem (missing file, unreadable image, unknown column, duplicate row) is collected into one
:class:`DataReport` that names the rows and the reasons, so a user fixes their data in one pass instead of
meeting a traceback per bad row.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass, field

from models import storage
from schemas.errors import UserError

COLUMNS = ("image", "labels")
LABEL_SEP = "|"
MANIFEST_NAMES = ("labels.csv", "labels.parquet", "manifest.parquet")


class DataError(UserError):
    """Training data that cannot be used as it is; the message summarises the report."""

    def __init__(self, message: str, report: "DataReport | None" = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Example:
    """One labelled image. ``key`` is the image as the manifest names it (recorded in the card's split)."""

    key: str
    path: str
    labels: frozenset[str]


@dataclass(frozen=True)
class Problem:
    row: int | None  # 1-based data row number in the manifest (header excluded); None for file-level issues
    image: str
    reason: str  # stable short code: missing_file, unreadable_image, unknown_column, duplicate_row, ...
    detail: str

    def line(self) -> str:
        where = f"row {self.row}" if self.row is not None else "manifest"
        image = f" {self.image}" if self.image else ""
        return f"{where}{image}: {self.reason} ({self.detail})"


@dataclass
class DataReport:
    source: str
    rows: int = 0
    problems: list[Problem] = field(default_factory=list)

    def add(self, row: int | None, image: str, reason: str, detail: str) -> None:
        self.problems.append(Problem(row, image, reason, detail))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.reason] = out.get(p.reason, 0) + 1
        return out

    def text(self) -> str:
        head = f"{self.source}: {self.rows} rows, {len(self.problems)} problem(s)"
        return "\n".join([head, *(p.line() for p in self.problems)]) + "\n"

    def summary(self, limit: int = 5) -> str:
        """One line: counts per reason and the first few rows with their reasons."""
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts().items()))
        shown = "; ".join(p.line() for p in self.problems[:limit])
        more = f"; ... {len(self.problems) - limit} more" if len(self.problems) > limit else ""
        return f"{self.source}: {len(self.problems)} problem(s) in {self.rows} rows ({counts}): {shown}{more}"


@dataclass(frozen=True)
class RawRow:
    row: int
    key: str
    path: str
    labels: frozenset[str]


def parse_labels(text: object) -> frozenset[str]:
    """``"cat|dog"`` -> {"cat", "dog"}; empty or missing is a valid negative (no tags)."""
    if text is None or (isinstance(text, float) and text != text):
        return frozenset()
    return frozenset(t.strip() for t in str(text).split(LABEL_SEP) if t.strip())


def resolve_manifest(path: str) -> str:
    """A dataset folder or a manifest file -> the manifest file (CSV, Parquet, COCO JSON or VOC folder)."""
    if storage.is_local(path) and os.path.isdir(path):
        for name in MANIFEST_NAMES:
            candidate = os.path.join(path, name)
            if os.path.exists(candidate):
                return candidate
        if os.path.isdir(os.path.join(path, "Annotations")):
            return path
        raise DataError(
            f"{path}: no labels.csv, labels.parquet or manifest.parquet, and no VOC Annotations/ folder here"
        )
    if not storage.exists(path):
        raise DataError(f"{path}: no such file or folder")
    return path


def read_manifest(path: str, report: DataReport, image_root: str | None = None) -> list[RawRow]:
    """Rows of a manifest of any supported kind; structural problems go to ``report``."""
    from models.training import importers

    if storage.is_local(path) and os.path.isdir(path):
        return importers.read_voc(path, report, image_root)
    lower = path.lower()
    if lower.endswith(".json"):
        return importers.read_coco(path, report, image_root)
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(storage.read_bytes(path)))
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
        columns, records = table.column_names, table.to_pylist()
    elif lower.endswith(".csv"):
        try:
            reader = csv.DictReader(io.StringIO(storage.read_bytes(path).decode("utf-8-sig")))
            columns, records = list(reader.fieldnames or []), list(reader)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: not a readable UTF-8 CSV ({exc})") from exc
    else:
        raise DataError(f"{path}: unknown manifest type (expected .csv, .parquet, a COCO .json or a VOC folder)")
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{path}: required column(s) {missing} missing; found {columns} (expected image,labels)")
    for extra in [c for c in columns if c not in COLUMNS]:
        report.add(None, "", "unknown_column", f"column {extra!r} is not one of {list(COLUMNS)}")
    base = _dirname(path if image_root is None else storage.join(image_root, "x"))
    rows = []
    for number, record in enumerate(records, start=1):
        if None in record:  # csv.DictReader puts surplus cells under the key None
            report.add(number, str(record.get("image") or ""), "malformed_row", "more cells than header columns")
            continue
        key = str(record.get("image") or "").strip()
        if not key:
            report.add(number, "", "missing_image_path", "the image cell is empty")
            continue
        rows.append(RawRow(number, key, _resolve(base, key), parse_labels(record.get("labels"))))
    return rows


def check_rows(rows: list[RawRow], report: DataReport) -> list[RawRow]:
    """Drop (and report) duplicate rows and rows whose image file does not exist."""
    first: dict[str, RawRow] = {}
    kept = []
    for row in rows:
        seen = first.get(row.path)
        if seen is not None:
            same = "same labels" if seen.labels == row.labels else "conflicting labels"
            report.add(row.row, row.key, "duplicate_row", f"image already listed in row {seen.row}, {same}")
            continue
        first[row.path] = row
        if not storage.exists(row.path):
            report.add(row.row, row.key, "missing_file", f"{row.path} does not exist")
            continue
        kept.append(row)
    return kept


def raise_or_warn(report: DataReport, skip_bad_rows: bool, report_path: str | None = None) -> None:
    """Fail with the report (default) or, with ``--skip-bad-rows``, let the job continue without those rows."""
    if not report.problems:
        return
    if report_path:
        storage.write_bytes_atomic(report_path, report.text().encode())
    if skip_bad_rows:
        return
    where = f"; full report: {report_path}" if report_path else ""
    raise DataError(f"{report.summary()}{where} (fix the data or pass --skip-bad-rows)", report)


def fingerprint(examples: list[Example], content_hashes: dict[str, str]) -> str:
    """sha256 over (image key, content hash, sorted labels) of every example: changes if any input does."""
    digest = hashlib.sha256()
    for ex in sorted(examples, key=lambda e: e.key):
        digest.update(f"{ex.key}\t{content_hashes.get(ex.path, '')}\t{LABEL_SEP.join(sorted(ex.labels))}\n".encode())
    return digest.hexdigest()


def keys_fingerprint(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


def _dirname(path: str) -> str:
    return os.path.dirname(path) if storage.is_local(path) else path.rsplit("/", 1)[0]


def _resolve(base: str, key: str) -> str:
    if "://" in key or os.path.isabs(key):
        return key
    return os.path.abspath(storage.join(base, key)) if storage.is_local(base) else storage.join(base, key)
