"""``tagger models list|show|promote|rollback``: inspect and move the registry's aliases."""
from __future__ import annotations

import argparse
import json

from jobs.common_args import add_registry_arg, registry_root
from models.registry import PRODUCTION, Registry, parse_ref


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list, inspect, promote and roll back model versions")
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    p_list = sub.add_parser("list", help="every model and version, with its production alias and mAP")
    add_registry_arg(p_list)
    p_list.set_defaults(func=_list)

    p_show = sub.add_parser("show", help="print a version's card (NAME, NAME@production or NAME@vN)")
    p_show.add_argument("ref")
    add_registry_arg(p_show)
    p_show.set_defaults(func=_show)

    p_promote = sub.add_parser("promote", help="point NAME@production at a version (NAME@vN)")
    p_promote.add_argument("ref")
    p_promote.add_argument("--reason", default="manual promote")
    add_registry_arg(p_promote)
    p_promote.set_defaults(func=_promote)

    p_rollback = sub.add_parser("rollback", help="move NAME@production back to its previous version")
    p_rollback.add_argument("name")
    add_registry_arg(p_rollback)
    p_rollback.set_defaults(func=_rollback)


def _list(args: argparse.Namespace) -> int:
    registry = Registry(registry_root(args))
    names = registry.names()
    if not names:
        print(f"no models in {registry.root}")
        return 0
    print(f"{'MODEL':<20} {'VERSION':<8} {'ALIAS':<11} {'mAP':>7}  CREATED")
    for name in names:
        production = registry.alias(name)
        for version in registry.versions(name):
            card = registry.card(name, version)
            m_ap = card.metrics.get("test", {}).get("mAP") if isinstance(card.metrics, dict) else None
            shown = f"{m_ap:.4f}" if isinstance(m_ap, (int, float)) else "-"
            alias = PRODUCTION if version == production else ""
            print(f"{name:<20} {version:<8} {alias:<11} {shown:>7}  {card.created_at}")
    return 0


def _show(args: argparse.Namespace) -> int:
    registry = Registry(registry_root(args))
    name, version = registry.resolve(args.ref)
    print(json.dumps(registry.card(name, version).to_dict(), indent=2, sort_keys=True))
    return 0


def _promote(args: argparse.Namespace) -> int:
    registry = Registry(registry_root(args))
    name, which = parse_ref(args.ref)
    name, version = registry.resolve(f"{name}@{which}")
    previous = registry.alias(name)
    registry.promote(name, version, reason=args.reason)
    print(f"{name}@{PRODUCTION}: {previous or '(none)'} -> {version}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    registry = Registry(registry_root(args))
    current = registry.alias(args.name)
    version = registry.rollback(args.name)
    print(f"{args.name}@{PRODUCTION}: {current} -> {version} (rolled back)")
    return 0
