"""A versioned model registry on a directory tree (local disk or any Beam filesystem).

Layout::

    <root>/<name>/<version>/model.onnx     the model, self-contained
    <root>/<name>/<version>/card.json      the contract; written last, so it marks the version complete
    <root>/<name>/<version>/report.html    training report (and any other attachments)
    <root>/<name>/_aliases/<alias>.json    {"version": ..., "history": [...]}, replaced atomically

Versions are immutable and numbered ``v1, v2, ...``. On local disks a version is assembled in a hidden
staging directory and renamed into place, so a reader never sees half of one and two concurrent publishers
can never claim the same number. On object stores (no atomic directory rename) files are uploaded under the
version prefix with ``card.json`` last, and readers ignore prefixes without a card; run one publisher per
model name there (the scheduled jobs hold a lock). Loading verifies ``model.onnx`` against the card's
sha256 and refuses anything that does not match.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from typing import Callable, Mapping

from models import storage
from schemas.card import CardError, ModelCard
from schemas.errors import UserError

ENV_VAR = "TAGGER_REGISTRY"
DEFAULT_ROOT = os.path.join("~", ".local", "share", "tagger", "registry")
PRODUCTION = "production"
MODEL_FILE = "model.onnx"
CARD_FILE = "card.json"
_VERSION_RE = re.compile(r"^v(\d+)$")
_ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


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
    """``name``, ``name@production`` or ``name@v3`` -> (name, alias-or-version)."""
    name, _, which = ref.partition("@")
    if not name:
        raise RegistryError(f"model reference {ref!r} has no name (expected NAME@production or NAME@vN)")
    return name, which or default_alias


@dataclass(frozen=True)
class LoadedModel:
    """A verified model: its card and a local path to ``model.onnx`` whose sha256 matched the card."""

    card: ModelCard
    model_path: str
    directory: str


Attachment = bytes | Callable[[ModelCard], bytes]


class Registry:
    def __init__(self, root: str | None = None) -> None:
        root = root or default_root()
        self.root = os.path.abspath(os.path.expanduser(root)) if storage.is_local(root) else root

    # ----------------------------------------------------------------------------------------------- reading
    def names(self) -> list[str]:
        return [n for n in storage.list_dirs(self.root) if not n.startswith((".", "_"))]

    def versions(self, name: str) -> list[str]:
        """Complete versions of ``name`` (those with a card), oldest first."""
        found = []
        for entry in storage.list_dirs(storage.join(self.root, name)):
            match = _VERSION_RE.match(entry)
            if match and storage.exists(storage.join(self.root, name, entry, CARD_FILE)):
                found.append((int(match.group(1)), entry))
        return [v for _, v in sorted(found)]

    def card(self, name: str, version: str) -> ModelCard:
        path = storage.join(self.root, name, version, CARD_FILE)
        if not storage.exists(path):
            raise RegistryError(f"model {name}@{version} does not exist in registry {self.root}")
        try:
            card = ModelCard.from_json(storage.read_bytes(path))
        except CardError as exc:
            raise RegistryError(f"model {name}@{version}: invalid card.json: {exc}") from exc
        if (card.name, card.version) != (name, version):
            raise RegistryError(
                f"model {name}@{version}: card.json says {card.ref}; the artifact was moved or tampered with"
            )
        return card

    def alias(self, name: str, alias: str = PRODUCTION) -> str | None:
        """The version an alias points to, or None if it was never set."""
        state = self._alias_state(name, alias)
        return state.get("version") if state else None

    def alias_history(self, name: str, alias: str = PRODUCTION) -> list[dict]:
        state = self._alias_state(name, alias)
        return list(state.get("history", [])) if state else []

    def resolve(self, ref: str) -> tuple[str, str]:
        """A reference (``name@production``, ``name@v3``, ``name``) -> (name, concrete version)."""
        name, which = parse_ref(ref)
        if _VERSION_RE.match(which):
            if which not in self.versions(name):
                raise RegistryError(f"model {name}@{which} does not exist in registry {self.root}")
            return name, which
        version = self.alias(name, which)
        if version is None:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(
                f"model {name} has no {which!r} version in registry {self.root} (models here: {known})"
            )
        return name, version

    def load(self, ref: str, cache_dir: str | None = None) -> LoadedModel:
        """Resolve ``ref``, verify ``model.onnx`` against the card's sha256 and return a local path to it.

        Remote models are copied into ``cache_dir`` (default ``~/.cache/tagger/models``) keyed by sha256.
        """
        name, version = self.resolve(ref)
        card = self.card(name, version)
        directory = storage.join(self.root, name, version)
        source = storage.join(directory, MODEL_FILE)
        if not storage.exists(source):
            raise RegistryError(f"model {card.ref}: {MODEL_FILE} is missing from {directory}")
        local = source
        if not storage.is_local(source):
            cache = os.path.expanduser(cache_dir or os.path.join("~", ".cache", "tagger", "models"))
            local = os.path.join(cache, f"{card.onnx_sha256}.onnx")
            if not os.path.exists(local):
                storage.write_bytes_atomic(local, storage.read_bytes(source))
        actual = sha256_file(local)
        if actual != card.onnx_sha256:
            raise RegistryError(
                f"model {card.ref}: {MODEL_FILE} is corrupt or was replaced "
                f"(sha256 {actual[:12]}... but card.json says {card.onnx_sha256[:12]}...); refusing to load it"
            )
        return LoadedModel(card=card, model_path=local, directory=directory)

    # ----------------------------------------------------------------------------------------------- writing
    def publish(
        self,
        card: ModelCard,
        model_file: str,
        attachments: Mapping[str, Attachment] | None = None,
    ) -> ModelCard:
        """Publish a new immutable version of ``card.name`` and return its final card.

        The registry assigns ``version``, ``onnx_sha256`` and (if empty) ``created_at``. Attachments are bytes
        or functions of the final card (e.g. a report that names the version).
        """
        attachments = dict(attachments or {})
        for reserved in (MODEL_FILE, CARD_FILE):
            if reserved in attachments:
                raise RegistryError(f"attachment name {reserved!r} is reserved")
        sha = sha256_file(model_file)
        created = card.created_at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        model_dir = storage.join(self.root, card.name)
        for _attempt in range(100):
            version = self._next_version(card.name)
            final = card.replace(version=version, onnx_sha256=sha, created_at=created)
            files: dict[str, bytes] = {
                name: (value(final) if callable(value) else value) for name, value in attachments.items()
            }
            if storage.is_local(self.root):
                staging = storage.new_staging_dir(model_dir)
                try:
                    _copy(model_file, storage.join(staging, MODEL_FILE))
                    for name, data in files.items():
                        storage.write_bytes_atomic(storage.join(staging, name), data)
                    storage.write_bytes_atomic(storage.join(staging, CARD_FILE), final.to_json().encode())
                    if storage.rename_dir(staging, storage.join(model_dir, version)):
                        return final
                finally:
                    storage.remove_tree(staging)
                continue  # another publisher took this number; try the next one
            target = storage.join(model_dir, version)
            storage.copy_file(model_file, storage.join(target, MODEL_FILE))
            for name, data in files.items():
                storage.write_bytes_atomic(storage.join(target, name), data)
            storage.write_bytes_atomic(storage.join(target, CARD_FILE), final.to_json().encode())
            return final
        raise RegistryError(f"could not allocate a version for {card.name} after 100 attempts")

    def set_alias(self, name: str, version: str, alias: str = PRODUCTION, reason: str = "") -> None:
        """Point ``alias`` at ``version`` (atomically) and record the move in the alias history."""
        if not _ALIAS_RE.match(alias) or _VERSION_RE.match(alias):
            raise RegistryError(f"invalid alias name {alias!r}")
        self.card(name, version)  # must exist and be readable
        state = self._alias_state(name, alias) or {"history": []}
        history = list(state.get("history", []))
        history.append(
            {
                "version": version,
                "previous": state.get("version"),
                "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "reason": reason,
            }
        )
        payload = {"alias": alias, "version": version, "history": history}
        storage.write_bytes_atomic(self._alias_path(name, alias), json.dumps(payload, indent=2).encode())

    def promote(self, name: str, version: str, reason: str = "manual promote") -> None:
        self.set_alias(name, version, PRODUCTION, reason)

    def rollback(self, name: str, alias: str = PRODUCTION) -> str:
        """Move ``alias`` back to the version it pointed to before its latest move; returns that version."""
        state = self._alias_state(name, alias)
        if not state or not state.get("version"):
            raise RegistryError(f"model {name} has no {alias!r} alias to roll back")
        previous = state["history"][-1].get("previous") if state.get("history") else None
        if not previous:
            raise RegistryError(f"model {name}@{alias} has no earlier version to roll back to")
        self.set_alias(name, previous, alias, reason=f"rollback from {state['version']}")
        return previous

    # ----------------------------------------------------------------------------------------------- helpers
    def _next_version(self, name: str) -> str:
        numbers = [
            int(m.group(1))
            for entry in storage.list_dirs(storage.join(self.root, name))
            if (m := _VERSION_RE.match(entry))
        ]
        return f"v{max(numbers, default=0) + 1}"

    def _alias_path(self, name: str, alias: str) -> str:
        return storage.join(self.root, name, "_aliases", f"{alias}.json")

    def _alias_state(self, name: str, alias: str) -> dict | None:
        path = self._alias_path(name, alias)
        if not storage.exists(path):
            return None
        try:
            return json.loads(storage.read_bytes(path))
        except json.JSONDecodeError as exc:
            raise RegistryError(f"alias file {path} is not valid JSON: {exc}") from exc


def _copy(src: str, dst: str) -> None:
    """Copy, never hard-link: a link would let a later write to the source change an immutable version."""
    shutil.copyfile(src, dst)
