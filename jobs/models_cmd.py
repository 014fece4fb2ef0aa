"""``tagger models list|show|promote|rollback|seal|quantize``: inspect and move the registry's aliases, add
variants."""
from __future__ import annotations

import argparse
import json
import os
import sys

from jobs.common_args import add_registry_arg, model_name, model_ref, registry_root
from models import storage
from models.registry import PRODUCTION, Registry, RegistryError, parse_ref
from schemas.errors import UserError
from schemas.model_refs import is_version


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list, inspect, promote and roll back model versions")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    p_list = sub.add_parser("list", help="every model and version, with its production alias and mAP; "
                            "broken versions are listed as BROKEN with the reason (exit status 1)")
    p_list.add_argument("--verify", action="store_true",
                        help="also check the sha256 of every file each card lists (reads every model file)")
    add_registry_arg(p_list)
    p_list.set_defaults(func=_list)

    p_show = sub.add_parser("show", help="print a version's card (NAME, NAME@production or NAME@vN)")
    p_show.add_argument("ref", type=model_ref, help="NAME, NAME@production or NAME@vN")
    add_registry_arg(p_show)
    p_show.set_defaults(func=_show)

    p_promote = sub.add_parser("promote", help="point NAME@production at a version (NAME@vN)")
    p_promote.add_argument("ref", type=model_ref, help="the version to promote, NAME@vN")
    p_promote.add_argument("--reason", default="manual promote", help="recorded in the alias history")
    add_registry_arg(p_promote)
    p_promote.set_defaults(func=_promote)

    p_rollback = sub.add_parser("rollback", help="move NAME@production back to its previous version")
    p_rollback.add_argument("name", type=model_name, help="model name")
    add_registry_arg(p_rollback)
    p_rollback.set_defaults(func=_rollback)

    p_seal = sub.add_parser("seal", help="record the card digest of a version published before seals existed "
                            "(NAME@vN), after checking its files against the card")
    p_seal.add_argument("ref", type=model_ref, help="the version to seal, NAME@vN")
    p_seal.add_argument("--reason", required=True, help="why this card is trusted (kept in the seal)")
    add_registry_arg(p_seal)
    p_seal.set_defaults(func=_seal)

    p_quantize = sub.add_parser(
        "quantize", help="publish NAME@vN again as a new version with an INT8 variant (checked on its test split)",
        description="Re-creates the version's split from its training data (checked against the card's split "
        "fingerprints), calibrates on training images, evaluates on the test split and publishes a new version "
        "with model.int8.onnx only if test mAP and thresholds hold (see docs/quantization.md).")
    p_quantize.add_argument("ref", help="NAME@vN or NAME@production")
    p_quantize.add_argument("--data", default=None,
                            help="the dataset the version was trained on (default: the path its card records)")
    p_quantize.add_argument("--promote", action="store_true", help="point production at the new version")
    add_registry_arg(p_quantize)
    p_quantize.set_defaults(func=_quantize)


def _list(args: argparse.Namespace) -> int:
    registry = Registry(registry_root(args))
    if storage.is_local(registry.root) and os.path.exists(registry.root) and not os.path.isdir(registry.root):
        raise UserError(f"registry {registry.root} is a file, not a directory")
    names = registry.names()
    if not names:
        print(f"no models in {registry.root}")
        return 0
    broken = 0
    print(f"{'MODEL':<20} {'VERSION':<8} {'ALIAS':<11} {'mAP':>7}  CREATED")
    for name in names:
        try:
            production = registry.alias(name)
        except RegistryError as exc:
            production, broken = None, broken + 1
            print(f"{name:<20} {'-':<8} {'BROKEN':<11} {'-':>7}  {exc}")
        for version in registry.versions(name):
            try:
                card = registry.verify(name, version) if args.verify else registry.card(name, version)
            except RegistryError as exc:
                broken += 1
                print(f"{name:<20} {version:<8} {'BROKEN':<11} {'-':>7}  {exc}")
                continue
            test = card.metrics.get("test") if isinstance(card.metrics, dict) else None
            m_ap = test.get("mAP") if isinstance(test, dict) else None
            shown = f"{m_ap:.4f}" if isinstance(m_ap, (int, float)) and not isinstance(m_ap, bool) else "-"
            alias = PRODUCTION if version == production else ""
            print(f"{name:<20} {version:<8} {alias:<11} {shown:>7}  {card.created_at}")
    if broken:
        print(f"tagger models list: {broken} broken entr{'y' if broken == 1 else 'ies'} (see BROKEN rows)",
              file=sys.stderr)
    return 1 if broken else 0


def _show(args: argparse.Namespace) -> int:
    registry = Registry(registry_root(args))
    print(json.dumps(registry.card_of(args.ref).to_dict(), indent=2, sort_keys=True))
    return 0


def _promote(args: argparse.Namespace) -> int:
    registry = Registry(registry_root(args))
    name, version = registry.resolve(args.ref)
    previous = registry.alias(name)
    registry.promote(name, version, reason=args.reason)
    print(f"{name}@{PRODUCTION}: {previous or '(none)'} -> {version}")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from models.training.quantize import quantize_version

    final, outcome = quantize_version(Registry(registry_root(args)), args.ref, data=args.data, promote=args.promote)
    print(outcome)
    return 0 if final is not None else 1


def _rollback(args: argparse.Namespace) -> int:
    registry = Registry(registry_root(args))
    current = registry.alias(args.name)
    version = registry.rollback(args.name)
    print(f"{args.name}@{PRODUCTION}: {current} -> {version} (rolled back)")
    return 0


def _seal(args: argparse.Namespace) -> int:
    name, version = parse_ref(args.ref)
    if not is_version(version):
        raise RegistryError(f"seal needs a concrete version NAME@vN, got {args.ref!r}")
    done = Registry(registry_root(args)).seal(name, version, args.reason)
    print(f"{name}@{version}: {'sealed' if done else 'already sealed with this card'}")
    return 0
