"""``tagger train``: train, calibrate, export, evaluate and publish a model version (gated promotion)."""
from __future__ import annotations

import argparse
import os
import re

from jobs.common_args import (
    add_progress_args,
    add_registry_arg,
    check_output_dir,
    existing_dir,
    existing_file,
    float_in,
    fraction,
    int_at_least,
    model_name,
    non_negative_int,
    positive_int,
    progress_style,
    registry_root,
)
from schemas.errors import UserError

ARCHS = ("efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "resnet50")
DEFAULT_ARCH, DEFAULT_IMAGE_SIZE = "efficientnet_lite2", 320  # = models.training.architectures (CLI stays light)
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def device(text: str) -> str:
    if not _DEVICE_RE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, cpu, cuda or cuda:N")
    return text


device.bad_values = ("gpu", "cuda:x", "")  # type: ignore[attr-defined]
# Arguments a resumed run takes from its checkpoint rather than from the command line.
RESUMABLE = ("data", "name", "arch", "epochs", "warmup_epochs", "seed", "feedback", "image_size", "batch_size", "lr",
             "loss", "patience", "finetune_fraction", "min_support", "images", "skip_bad_rows", "pretrained", "recipe",
             "folds", "head_weight_decay", "flip_tta", "feedback_as_of")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a multi-label model and publish it to the registry",
        description="Train a multi-label tagger from labels.csv / Parquet / COCO JSON / VOC folder, calibrate "
        "per-class thresholds, export ONNX, evaluate on a held-out split and publish; the new version is promoted "
        "to production only if it beats production's mAP on the same unseen test split by a margin its bootstrap "
        "interval supports (and always beats the label-prior scorer). See docs/training.md.",
    )
    p.add_argument("--data", help="dataset folder (labels.csv or labels.parquet), a manifest .csv/.parquet, a COCO "
                   "instances .json, or a Pascal VOC folder (Annotations/ + JPEGImages/); required unless --resume")
    add_registry_arg(p)
    p.add_argument("--name", type=model_name, default="tagger", help="model name in the registry")
    p.add_argument("--arch", default=DEFAULT_ARCH, choices=ARCHS, help="backbone")
    p.add_argument("--recipe", default="probe", choices=("probe", "finetune"),
                   help="probe: frozen backbone + linear head, k-fold cross-validated, thresholds from out-of-fold "
                   "predictions; finetune: warm-up + partial fine-tuning, thresholds from the val split")
    p.add_argument("--folds", type=int_at_least(2), default=5, help="cross-validation folds of the probe recipe")
    p.add_argument("--head-weight-decay", type=float_in(0, 10), default=1e-3,
                   help="L2 penalty of the probe's linear head (chosen by cross-validation)")
    p.add_argument("--flip-tta", action="store_true",
                   help="average each prediction over the image and its mirror inside model.onnx (probe recipe; "
                   "2x inference cost for +0.005 cross-validated mAP on coco128)")
    p.add_argument("--promote", action="store_true",
                   help="promote even if the gate cannot show the new model beats production (a person's decision; "
                   "a model no better than the label prior is still never promoted)")
    p.add_argument("--epochs", type=positive_int, default=10, help="maximum epochs (early stopping on val mAP); "
                   "probe recipe: L-BFGS steps of 20 iterations for the head")
    p.add_argument("--warmup-epochs", type=non_negative_int, default=2,
                   help="head-only epochs with a frozen backbone")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed for split, init, order and augmentation")
    p.add_argument("--feedback", type=existing_dir, metavar="DIR",
                   help="feedback dataset whose corrections override/extend the labels")
    p.add_argument("--feedback-as-of", metavar="RUN_ID",
                   help="feedback dataset version (ingest run id) to train on (default: its latest; the card records "
                   "the one used)")
    p.add_argument("--image-size", type=int_at_least(32), default=DEFAULT_IMAGE_SIZE,
                   help="model input side in pixels (the quality/cost trade-off: docs/training.md)")
    p.add_argument("--batch-size", type=int_at_least(2, " (BatchNorm trains on two images or more)"), default=32,
                   help="training images per optimizer step")
    p.add_argument("--lr", type=float_in(0, 10, low_open=True), default=2e-3,
                   help="head learning rate; the backbone uses 0.1x")
    p.add_argument("--loss", default="weighted_bce", choices=("weighted_bce", "bce", "asymmetric"),
                   help="multi-label loss: BCE weighted by class frequency, plain BCE, or asymmetric loss")
    p.add_argument("--patience", type=positive_int, default=3, help="early-stopping patience in epochs")
    p.add_argument("--finetune-fraction", type=fraction, default=0.3,
                   help="share of the backbone's deepest layers fine-tuned after warm-up, 0..1")
    p.add_argument("--min-support", type=positive_int, default=3,
                   help="validation positives a class needs for its own calibrated threshold; fewer use the "
                        "global one")
    p.add_argument("--images", type=existing_dir, metavar="DIR",
                   help="image root for COCO/VOC annotations (default: next to the annotations)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="train without rows that fail validation (listed in the card) instead of failing")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="do not use ImageNet weights")
    p.add_argument("--device", type=device, default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=positive_int, help="CPU threads (default: all cores, or one if the machine is busy)")
    p.add_argument("--work-dir", metavar="DIR",
                   help="checkpoints, exported model and data report (default: var/train/NAME-TIME)")
    p.add_argument("--resume", type=existing_file, metavar="CHECKPOINT",
                   help="checkpoint.pt to continue from (its arguments are reused)")
    add_progress_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    values = vars(args).copy()
    if args.resume:
        from models.training.engine import load_checkpoint_args  # torch: only for a checkpoint

        saved = load_checkpoint_args(args.resume)
        values.update({k: saved[k] for k in RESUMABLE if k in saved})
        values["work_dir"] = args.work_dir or saved.get("work_dir")
    if not values.get("data"):
        raise UserError("--data is required (or --resume CHECKPOINT)")
    values["registry"] = registry_root(args)
    _check_before_training(values)  # before importing torch: a bad destination fails in a blink

    from models.training.job import JobArgs, run as run_job

    run_job(JobArgs.from_dict(values), progress=progress_style(args))
    return 0


def _check_before_training(values: dict) -> None:
    """Everything that would otherwise fail after minutes of training: the data exists, the registry and the
    work directory can be written."""
    data = values["data"]
    if "://" not in data and not os.path.exists(data):
        raise UserError(f"--data {data} does not exist")
    check_output_dir(values["registry"], "--registry")
    check_output_dir(values.get("work_dir") or os.path.join("var", "train"), "--work-dir")
