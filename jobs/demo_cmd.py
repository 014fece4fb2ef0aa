"""``tagger demo``: the embedded default — real images from the package registries, a model, a tagging run."""
from __future__ import annotations

import argparse
import os
import time

from jobs.common_args import add_deprecated_alias, positive_int
from jobs.demo.config import DemoDataConfig

DEFAULT_WORKDIR = os.path.join("var", "demo")
DEFAULTS = DemoDataConfig()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="build a demo archive, train a first model if needed, tag the archive, run the analyst queries",
        description="Builds a labelled demo archive from Debian's Fashion-MNIST and scikit-image's sample photos "
        "(installing them when missing), trains a first model if the demo registry has none, tags the archive "
        "with `tagger tag --incremental` and runs the README's DuckDB queries. A second run reuses everything.",
    )
    parser.add_argument("--work-dir", dest="workdir", default=DEFAULT_WORKDIR, metavar="DIR",
                        help="where everything goes")
    add_deprecated_alias(parser, "--workdir", "--work-dir", dest="workdir")
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help="fail instead of installing missing data packages (apt-get / pip)")
    parser.add_argument("--train-images", type=positive_int, default=DEFAULTS.train_images,
                        help="training mosaics")
    parser.add_argument("--archive-mosaics", type=positive_int, default=DEFAULTS.archive_mosaics,
                        help="mosaics in the archive to tag")
    parser.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: the demo's preset)")
    parser.add_argument("--data-only", action="store_true",
                        help="build the demo data set (train/ and archive/ under --work-dir/data) and stop")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from jobs.common_args import check_output_dir
    from jobs.demo import dataset, steps
    from models.registry import Registry

    started = time.monotonic()
    root = os.path.abspath(args.workdir)
    check_output_dir(root, "--work-dir")
    registry_root = os.path.join(root, "registry")
    output = os.path.join(root, "tags")

    config = dataset.DemoDataConfig(train_images=args.train_images, archive_mosaics=args.archive_mosaics)
    data = dataset.build(os.path.join(root, "data"), config, install=args.install)
    print(f"demo data: {'reused' if data.reused else 'built'} in {data.root} "
          f"({len(data.classes)} classes: {', '.join(data.classes)})", flush=True)
    if args.data_only:
        print(f"  training set  {data.train_dir}\n  archive       {data.archive_dir}")
        return 0

    version, trained = steps.ensure_model(registry_root, data.train_dir, os.path.join(root, "train-work"),
                                          epochs=args.epochs)
    print(f"model: {steps.MODEL_NAME}@{version} ({'trained now' if trained else 'reused from the registry'})",
          flush=True)

    steps.tag_archive(data.archive_dir, output, registry_root)

    print("\nAnalyst queries (schemas/queries.sql, as in the README):\n")
    print(steps.analyst_queries(output))

    card_dir = os.path.join(Registry(registry_root).root, steps.MODEL_NAME, version)
    print("\nWhere things are:")
    print(f"  Parquet (hive-partitioned)  {output}/run_date=*/model_version=*/")
    print(f"  dead letters                {output}/_errors/")
    print(f"  run manifest                {steps.latest_manifest(output)}")
    print(f"  model card and report       {card_dir}/card.json, {card_dir}/report.html")
    print(f"  archive ground truth        {data.archive_labels}")
    print(f"demo finished in {time.monotonic() - started:.0f} s")
    return 0
