"""A versioned model registry on a directory tree (local disk or any Beam filesystem).

Layout::

    <root>/<name>/<version>/model.onnx     the model, self-contained
    <root>/<name>/<version>/card.json      the contract; lists the sha256 of every other file of the version
    <root>/<name>/<version>/report.html    training report (and any other attachments)
    <root>/<name>/_seals/<version>.json    the sha256 of the version's card.json, recorded when it was published
    <root>/<name>/_aliases/<alias>.json    {"version", "card_sha256", "history": [...]}, replaced atomically
    <root>/<name>/_registry.lock           writers of this model take turns on it (local disks)

Versions are immutable and numbered ``v1, v2, ...``. Tamper evidence is a chain: the seal (outside the version
directory) vouches for ``card.json``; the card vouches for ``model.onnx`` and every other file it lists; an
alias also records the card digest of the version it was moved to. Loading checks the whole chain and refuses,
in one line, a version whose card or any listed file changed after publishing. See docs/registry.md.

Writers (publish, promote, rollback, seal) hold a per-model lock: an ``flock`` on ``_registry.lock`` on local
disks (works across processes, and on NFS where the server supports locks), and on object stores, which have
no lock primitive here, a host-local lock file under ``$TAGGER_REGISTRY_LOCK_DIR`` (default
``~/.cache/tagger/locks``): writers on one host take turns; writers on several hosts must share that directory
(e.g. on NFS) or be one host. On local disks a version is assembled in a hidden staging directory and renamed
into place, so a reader never sees half of one; on object stores ``card.json`` is uploaded last and readers
ignore prefixes without a card.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

from models import storage
from models.locks import LockTimeout, file_lock
from schemas import json_values
from schemas.card import CARD_FILE, MODEL_FILE, CardError, ModelCard
from schemas.errors import UserError
from schemas.model_refs import PRODUCTION, RefError, check_alias, check_name, check_version, is_name, is_version
from schemas.model_refs import parse_ref as _parse_ref

ENV_VAR = "TAGGER_REGISTRY"
LOCK_DIR_ENV_VAR = "TAGGER_REGISTRY_LOCK_DIR"
DEFAULT_ROOT = os.path.join("~", ".local", "share", "tagger", "registry")
SEALS_DIR = "_seals"
ALIASES_DIR = "_aliases"
LOCK_FILE = "_registry.lock"
_SHA256 = re.compile("[0-9a-f]{64}")
__all__ = ["PRODUCTION", "MODEL_FILE", "CARD_FILE", "Registry", "RegistryError", "LoadedModel", "parse_ref"]


class RegistryError(UserError):
    """A registry operation that cannot be done; the message says which model, version and why."""


def default_root() -> str:
    """``$TAGGER_REGISTRY`` if set, else ``~/.local/share/tagger/registry``."""
    return os.environ.get(ENV_VAR) or os.path.expanduser(DEFAULT_ROOT)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    for chunk in storage.iter_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


def parse_ref(ref: str, default_alias: str = PRODUCTION) -> tuple[str, str]:
    """``name``, ``name@production`` or ``name@v3`` -> (name, alias-or-version); see schemas/model_refs.py."""
    return tuple(_checked(lambda text: _parse_ref(text, default_alias), ref))  # type: ignore[return-value]


@dataclass(frozen=True)
class AliasMove:
    """One entry of an alias history."""

    version: str
    previous: str | None = None
    at: str = ""
    reason: str = ""
    card_sha256: str = ""


@dataclass(frozen=True)
class AliasState:
    """The content of ``_aliases/<alias>.json``."""

    version: str
    alias: str = ""
    card_sha256: str = ""  # digest of the card the alias was moved to (absent in files written before seals)
    history: tuple[AliasMove, ...] = ()


@dataclass(frozen=True)
class Seal:
    """The content of ``_seals/<version>.json``: the card's digest, recorded outside the version directory."""

    version: str
    card_sha256: str
    sealed_at: str = ""
    how: str = ""


@dataclass(frozen=True)
class LoadedModel:
    """A verified model: its card and local paths of the files it lists, whose sha256 all matched."""

    card: ModelCard
    model_path: str
    directory: str
    paths: Mapping[str, str] = dataclasses.field(default_factory=dict)  # file name -> verified local path
    variant: str = "fp32"  # which of the card's variants ``model_path`` is (card.variants)

    def as_variant(self, variant: str) -> "LoadedModel":
        """The same verified version with ``model_path`` naming ``variant``'s file: no second round of hashing."""
        model_path = self.paths[MODEL_FILE] if variant == "fp32" else self.paths[_variant_file(self.card, variant)]
        return dataclasses.replace(self, model_path=model_path, variant=variant)


Attachment = bytes | Callable[[ModelCard], bytes] | os.PathLike


def verify_files(directory: str, expected: Mapping[str, str], what: str, cache_dir: str | None = None
                 ) -> dict[str, str]:
    """Check that every file in ``expected`` ({file name: sha256}) under ``directory`` has that sha256.

    The one integrity check of the registry: the card's files, model variants and attachments all go through
    it. Returns {file name: local path}; remote files are copied into ``cache_dir`` (default
    ``~/.cache/tagger/models``) under their sha256 first and the copy is what gets checked.
    """
    paths = {}
    for file_name, sha in sorted(expected.items()):
        source = storage.join(directory, file_name)
        if not storage.exists(source):
            raise RegistryError(f"model {what}: {file_name} is missing from {directory}")
        local = source
        if not storage.is_local(source):
            cache = os.path.expanduser(cache_dir or os.path.join("~", ".cache", "tagger", "models"))
            local = os.path.join(cache, f"{sha}{os.path.splitext(file_name)[1]}")
            if not os.path.exists(local):
                storage.write_bytes_atomic(local, storage.read_bytes(source))
        actual = sha256_file(local)
        if actual != sha:
            raise RegistryError(
                f"model {what}: {file_name} is corrupt or was replaced "
                f"(sha256 {actual[:12]}... but card.json says {sha[:12]}...); refusing to load it"
            )
        paths[file_name] = local
    return paths


class Registry:
    def __init__(self, root: str | None = None) -> None:
        root = root or default_root()
        self.root = os.path.abspath(os.path.expanduser(root)) if storage.is_local(root) else root

    # ----------------------------------------------------------------------------------------------- reading
    def names(self) -> list[str]:
        """Model names in the registry (directories outside the name grammar are not models)."""
        return [n for n in storage.list_dirs(self.root) if is_name(n)]

    def versions(self, name: str) -> list[str]:
        """Complete versions of ``name`` (those with a card), oldest first."""
        base = storage.join(self.root, _name(name))
        found = [v for v in storage.list_dirs(base)
                 if is_version(v) and storage.exists(storage.join(base, v, CARD_FILE))]
        return sorted(found, key=lambda v: int(v[1:]))

    def card(self, name: str, version: str) -> ModelCard:
        """The card of ``name@version``, checked against its seal; a one-line RegistryError otherwise."""
        return self._sealed_card(name, version)[0]

    def card_of(self, ref: str) -> ModelCard:
        """The verified card a reference resolves to (alias digest included), without hashing model files."""
        return self._card_for_ref(ref)[0]

    def alias(self, name: str, alias: str = PRODUCTION) -> str | None:
        """The version an alias points to, or None if it was never set."""
        state = self._alias_state(name, alias)
        return state.version if state else None

    def alias_history(self, name: str, alias: str = PRODUCTION) -> list[dict]:
        state = self._alias_state(name, alias)
        return [dataclasses.asdict(move) for move in state.history] if state else []

    def resolve(self, ref: str) -> tuple[str, str]:
        """A reference (``name@production``, ``name@v3``, ``name``) -> (name, concrete version)."""
        name, version, _ = self._resolve(ref)
        return name, version

    def verify(self, name: str, version: str, cache_dir: str | None = None) -> ModelCard:
        """The card of ``name@version`` after checking it and every file it lists (``models list --verify``)."""
        card = self.card(name, version)
        verify_files(storage.join(self.root, name, version), card.artifact_digests(), card.ref, cache_dir)
        return card

    def load(self, ref: str, cache_dir: str | None = None, variant: str = "fp32") -> LoadedModel:
        """Resolve ``ref``, verify its card and every file the card lists, and return local paths to them;
        ``model_path`` is the requested ``variant``'s file (``int8``: ``model.int8.onnx``)."""
        card, directory = self._card_for_ref(ref)
        paths = verify_files(directory, card.artifact_digests(), card.ref, cache_dir)
        if MODEL_FILE not in paths:
            raise RegistryError(f"model {card.ref}: card.json lists no {MODEL_FILE} (onnx_sha256 is empty)")
        return LoadedModel(card=card, model_path=paths[MODEL_FILE], directory=directory, paths=paths).as_variant(variant)

    # ----------------------------------------------------------------------------------------------- writing
    def publish(
        self,
        card: ModelCard,
        model_file: str,
        attachments: Mapping[str, Attachment] | None = None,
    ) -> ModelCard:
        """Publish a new immutable version of ``card.name`` and return its final card.

        The registry assigns ``version``, ``onnx_sha256``, ``files`` and (if empty) ``created_at``. Attachments
        are bytes, local files (``os.PathLike``, e.g. a model variant) or functions of the card (e.g. a report
        that names the version); each is listed in ``card.files`` with its sha256 and verified on load.
        """
        attachments = dict(attachments or {})
        for reserved in (MODEL_FILE, CARD_FILE):
            if reserved in attachments:
                raise RegistryError(f"attachment name {reserved!r} is reserved")
        try:
            card.replace(files={n: "0" * 64 for n in attachments})  # attachment names must be plain file names
        except CardError as exc:
            raise RegistryError(f"cannot publish {card.name}: {exc}") from None
        sha = sha256_file(model_file)
        created = card.created_at or _now()
        model_dir = storage.join(self.root, _name(card.name))
        with self._writer_lock(card.name):
            version = self._next_version(card.name)
            final = card.replace(version=version, onnx_sha256=sha, created_at=created, files={})
            blobs: dict[str, bytes] = {}
            copies: dict[str, str] = {}
            digests = {MODEL_FILE: sha}
            for file_name, value in attachments.items():
                if isinstance(value, os.PathLike):
                    copies[file_name] = os.fspath(value)
                    digests[file_name] = sha256_file(copies[file_name])
                else:
                    blobs[file_name] = value(final) if callable(value) else value
                    digests[file_name] = hashlib.sha256(blobs[file_name]).hexdigest()
            final = final.replace(files=digests)
            card_bytes = final.to_json().encode()
            seal = Seal(version, hashlib.sha256(card_bytes).hexdigest(), _now(), "publish")
            local = storage.is_local(self.root)
            target = storage.new_staging_dir(model_dir) if local else storage.join(model_dir, version)
            try:
                for file_name, path in {MODEL_FILE: model_file, **copies}.items():
                    (_copy if local else storage.copy_file)(path, storage.join(target, file_name))
                for file_name, data in blobs.items():
                    storage.write_bytes_atomic(storage.join(target, file_name), data)
                if not local:
                    self._write_seal(card.name, seal)
                storage.write_bytes_atomic(storage.join(target, CARD_FILE), card_bytes)  # the commit marker
                if local:
                    self._write_seal(card.name, seal)  # before the version appears: it is never seen unsealed
                    if not storage.rename_dir(target, storage.join(model_dir, version)):
                        raise RegistryError(
                            f"{card.name}@{version} appeared while this publisher held the registry lock: "
                            f"another writer does not honour {LOCK_FILE} (is the filesystem without flock?)"
                        )
            finally:
                if local:
                    storage.remove_tree(target)
        return final

    def set_alias(self, name: str, version: str, alias: str = PRODUCTION, reason: str = "") -> None:
        """Point ``alias`` at ``version`` (atomically) and record the move in the alias history."""
        _alias(alias)
        self._require_model(name)
        with self._writer_lock(name):
            self._set_alias_locked(name, version, alias, reason)

    def promote(self, name: str, version: str, reason: str = "manual promote") -> None:
        self.set_alias(name, version, PRODUCTION, reason)

    def rollback(self, name: str, alias: str = PRODUCTION) -> str:
        """Move ``alias`` back to the version it pointed to before its latest move; returns that version."""
        _alias(alias)
        self._require_model(name)
        with self._writer_lock(name):
            state = self._alias_state(name, alias)
            if not state:
                raise RegistryError(f"model {name} has no {alias!r} alias to roll back")
            previous = state.history[-1].previous if state.history else None
            if not previous:
                raise RegistryError(f"model {name}@{alias} has no earlier version to roll back to")
            self._set_alias_locked(name, previous, alias, reason=f"rollback from {state.version}")
        return previous

    def seal(self, name: str, version: str, reason: str) -> bool:
        """Record the seal of a version published before seals existed, after checking its files.

        Returns False if it was already sealed with this card; refuses a version sealed with another card.
        """
        self._require_model(name)
        with self._writer_lock(name):
            directory = storage.join(self.root, _name(name), _version(version))
            seal = self._read_seal(name, version)
            card_bytes = self._read_card_bytes(name, version)
            digest = hashlib.sha256(card_bytes).hexdigest()
            if seal is not None:
                if seal.card_sha256 != digest:
                    raise RegistryError(f"model {name}@{version}: card.json changed after publishing; it stays "
                                        "refused (publish a new version with the intended card instead)")
                return False
            card = self._parse_card(name, version, card_bytes, None)
            verify_files(directory, card.artifact_digests(), card.ref)
            self._write_seal(name, Seal(version, digest, _now(), f"sealed by hand: {reason}"))
        return True

    # ----------------------------------------------------------------------------------------------- helpers
    def _resolve(self, ref: str) -> tuple[str, str, str]:
        """(name, version, card digest the alias recorded or "") for a reference."""
        name, which = parse_ref(ref)
        if is_version(which):
            if not storage.exists(storage.join(self.root, name, which, CARD_FILE)):
                raise RegistryError(f"model {name}@{which} does not exist in registry {self.root}")
            return name, which, ""
        state = self._alias_state(name, which)
        if state is None:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(
                f"model {name} has no {which!r} version in registry {self.root} (models here: {known})"
            )
        return name, state.version, state.card_sha256

    def _card_for_ref(self, ref: str) -> tuple[ModelCard, str]:
        name, version, recorded = self._resolve(ref)
        card, digest = self._sealed_card(name, version)
        if recorded and recorded != digest:
            raise RegistryError(
                f"model {card.ref}: its card (sha256 {digest[:12]}...) is not the one {ref} was moved to "
                f"({recorded[:12]}..., per {self._alias_path(name, parse_ref(ref)[1])}); promote it again to "
                "accept it"
            )
        return card, storage.join(self.root, name, version)

    def _sealed_card(self, name: str, version: str) -> tuple[ModelCard, str]:
        card_bytes = self._read_card_bytes(name, version)
        digest = hashlib.sha256(card_bytes).hexdigest()
        seal = self._read_seal(name, version)
        card = self._parse_card(name, version, card_bytes, seal if seal and seal.card_sha256 != digest else None)
        if seal is None:
            raise RegistryError(
                f"model {card.ref} has no seal ({self._seal_path(name, version)}): published before seals "
                f"existed or the seal was removed; check the card, then run `tagger models seal {card.ref}`"
            )
        if seal.card_sha256 != digest:
            raise RegistryError(
                f"model {card.ref}: {storage.join(self.root, name, version, CARD_FILE)} changed after publishing "
                f"(sha256 {digest[:12]}..., sealed {seal.card_sha256[:12]}... in {self._seal_path(name, version)}); "
                "refusing it"
            )
        return card, digest

    def _read_card_bytes(self, name: str, version: str) -> bytes:
        path = storage.join(self.root, _name(name), _version(version), CARD_FILE)
        if not storage.exists(path):
            raise RegistryError(f"model {name}@{version} does not exist in registry {self.root}")
        return _read_document(path)

    def _parse_card(self, name: str, version: str, card_bytes: bytes, mismatched: Seal | None) -> ModelCard:
        path = storage.join(self.root, name, version, CARD_FILE)
        changed = " (and it changed after publishing)" if mismatched else ""
        try:
            card = ModelCard.from_json(card_bytes)
        except CardError as exc:
            raise RegistryError(f"model {name}@{version}: {path}: {str(exc).removeprefix('card.json ')}{changed}"
                                ) from None
        if (card.name, card.version) != (name, version):
            raise RegistryError(
                f"model {name}@{version}: {path} says {card.ref}; the artifact was moved or tampered with{changed}"
            )
        return card

    def _set_alias_locked(self, name: str, version: str, alias: str, reason: str) -> None:
        _, card_sha = self._sealed_card(name, version)  # must exist, be readable and intact
        state = self._alias_state(name, alias)
        move = AliasMove(version, state.version if state else None, _now(), str(reason), card_sha)
        new = AliasState(version, alias, card_sha, (*(state.history if state else ()), move))
        storage.write_bytes_atomic(self._alias_path(name, alias), _dump(new))

    def _require_model(self, name: str) -> None:
        """Refuse writes to a model that was never published (taking its lock would create its directory)."""
        if not self.versions(name):
            raise RegistryError(f"model {name} has no versions in registry {self.root}")

    def _next_version(self, name: str) -> str:
        """One past the highest number ever used, debris of interrupted uploads included."""
        numbers = [int(entry[1:]) for entry in storage.list_dirs(storage.join(self.root, name)) if is_version(entry)]
        return f"v{max(numbers, default=0) + 1}"

    def _alias_path(self, name: str, alias: str) -> str:
        return storage.join(self.root, _name(name), ALIASES_DIR, f"{_alias(alias)}.json")

    def _alias_state(self, name: str, alias: str) -> AliasState | None:
        path = self._alias_path(name, alias)
        hint = "; fix the file or move it aside (its history is then lost)"
        try:
            state = _read_record(path, AliasState)
            if state is None:
                return None
            for i, move in enumerate((state, *state.history)):
                field = "version" if i == 0 else f"history[{i - 1}]"
                check_version(move.version, f"{field}.version")
                if i and move.previous is not None:
                    check_version(move.previous, f"{field}.previous")
                if move.card_sha256 and not _SHA256.fullmatch(move.card_sha256):
                    raise RefError(f"field {'' if i == 0 else field + '.'}card_sha256: not a sha256 "
                                   f"({json_values.describe(move.card_sha256)})")
            if state.alias and state.alias != alias:
                raise RefError(f"field alias: says {state.alias!r} but the file is {alias}.json")
        except (json_values.JSONValueError, RefError) as exc:
            raise RegistryError(f"model {name}: alias file {path}: {exc}{hint}") from None
        return state

    def _seal_path(self, name: str, version: str) -> str:
        return storage.join(self.root, _name(name), SEALS_DIR, f"{_version(version)}.json")

    def _read_seal(self, name: str, version: str) -> Seal | None:
        path = self._seal_path(name, version)
        try:
            seal = _read_record(path, Seal)
        except json_values.JSONValueError as exc:
            raise RegistryError(f"model {name}@{version}: seal {path}: {exc}") from None
        if seal is None:
            return None
        if seal.version != version:
            raise RegistryError(f"model {name}@{version}: seal {path} is for {seal.version!r}")
        return seal

    def _write_seal(self, name: str, seal: Seal) -> None:
        storage.write_bytes_atomic(self._seal_path(name, seal.version), _dump(seal))

    @contextlib.contextmanager
    def _writer_lock(self, name: str) -> Iterator[None]:
        """Writers of one model take turns (see the module docstring for object stores)."""
        if storage.is_local(self.root):
            path = storage.join(self.root, _name(name), LOCK_FILE)
        else:
            lock_dir = os.environ.get(LOCK_DIR_ENV_VAR) or os.path.expanduser(os.path.join("~", ".cache", "tagger",
                                                                                           "locks"))
            key = hashlib.sha256(self.root.rstrip("/").encode()).hexdigest()[:16]
            path = os.path.join(lock_dir, key, f"{_name(name)}.lock")
        try:
            with file_lock(path, f"model {name} in registry {self.root}"):
                yield
        except LockTimeout as exc:
            raise RegistryError(str(exc)) from None


def _checked(check: Callable[[str], str], value: str) -> str:
    """``check(value)`` with a grammar error turned into a RegistryError (what registry callers catch)."""
    try:
        return check(value)
    except RefError as exc:
        raise RegistryError(str(exc)) from None


def _name(name: str) -> str:
    return _checked(check_name, name)


def _version(version: str) -> str:
    return _checked(check_version, version)


def _alias(alias: str) -> str:
    return _checked(check_alias, alias)


def _read_document(path: str) -> bytes:
    """A card, seal or alias file, read with a size cap (a hand-made 10 GB file must not exhaust memory)."""
    try:
        if storage.is_local(path):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not hang the reader
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise RegistryError(f"{path} is not a regular file")
                return fh.read(json_values.MAX_DOCUMENT_BYTES + 1)
        return storage.read_bytes(path, json_values.MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise RegistryError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_record(path: str, cls: type):
    """A registry JSON record (alias state, seal) as dataclass ``cls``; None if there is no such file."""
    if not storage.exists(path):
        return None
    return cls(**json_values.check_fields(cls, json_values.loads_strict(_read_document(path))))


def _dump(record: object) -> bytes:
    return json.dumps(dataclasses.asdict(record), indent=2, allow_nan=False).encode()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _variant_file(card: ModelCard, variant: str) -> str:
    """The file of a published variant, which ``card.files`` must list (so :func:`verify_files` checked it)."""
    entry = card.variants.get(variant)
    if not entry or entry.get("status") != "published":
        why = f" (withheld: {entry.get('withheld_reason')})" if entry else ""
        raise RegistryError(f"model {card.ref} has no published {variant} variant{why}")
    listed = card.files.get(entry["file"])
    if listed is None or entry.get("sha256", listed) != listed:
        raise RegistryError(f"model {card.ref}: card.json lists no sha256 for {entry['file']} (or two different "
                            "ones); refusing to load it")
    return entry["file"]


def _copy(src: str, dst: str) -> None:
    """Copy, never hard-link: a link would let a later write to the source change an immutable version."""
    shutil.copyfile(src, dst)
