"""``tagger train``: train, calibrate, export, evaluate and publish a model version (gated promotion)."""
from __future__ import annotations

import argparse

from jobs.common_args import add_registry_arg, registry_root

ARCHS = ("efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "resnet50")
DEFAULT_ARCH, DEFAULT_IMAGE_SIZE = "efficientnet_lite2", 320  # = models.training.architectures (CLI stays light)
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
                   "instances .json, or a Pascal VOC folder (Annotations/ + JPEGImages/)")
    add_registry_arg(p)
    p.add_argument("--name", default="tagger", type=_model_name, help="model name in the registry (default: tagger)")
    p.add_argument("--arch", default=DEFAULT_ARCH, choices=ARCHS, help=f"backbone (default: {DEFAULT_ARCH})")
    p.add_argument("--recipe", default="probe", choices=("probe", "finetune"),
                   help="probe: frozen backbone + linear head, k-fold cross-validated, thresholds from out-of-fold "
                   "predictions (default); finetune: warm-up + partial fine-tuning, thresholds from the val split")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the probe recipe (default: 5)")
    p.add_argument("--head-weight-decay", type=float, default=1e-3,
                   help="L2 penalty of the probe's linear head (default: 1e-3, chosen by cross-validation)")
    p.add_argument("--flip-tta", action="store_true",
                   help="average each prediction over the image and its mirror inside model.onnx (probe recipe; "
                   "2x inference cost for +0.005 cross-validated mAP on coco128)")
    p.add_argument("--promote", action="store_true",
                   help="promote even if the gate cannot show the new model beats production (a person's decision; "
                   "a model no better than the label prior is still never promoted)")
    p.add_argument("--epochs", type=int, default=10, help="maximum epochs (default: 10; early stopping on val mAP); "
                   "probe recipe: L-BFGS steps of 20 iterations for the head; 0 = the untrained label-prior head")
    p.add_argument("--warmup-epochs", type=int, default=2, help="head-only epochs with a frozen backbone (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed for split, init, order and augmentation (default: 0)")
    p.add_argument("--feedback", help="feedback folder whose corrections override/extend the labels")
    p.add_argument("--feedback-as-of", help="feedback dataset version (ingest run id) to train on (default: its "
                   "latest; the card records the one used)")
    p.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE,
                   help=f"model input side in pixels (default: {DEFAULT_IMAGE_SIZE}; the quality/cost trade-off: "
                   "docs/training.md)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3, help="head learning rate; backbone uses 0.1x (default: 2e-3)")
    p.add_argument("--loss", default="weighted_bce", choices=("weighted_bce", "bce", "asymmetric"))
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs (default: 3)")
    p.add_argument("--finetune-fraction", type=float, default=0.3,
                   help="share of the backbone's deepest layers fine-tuned after warm-up, 0..1 (default: 0.3)")
    p.add_argument("--min-support", type=int, default=3,
                   help="validation positives a class needs for its own threshold; fewer use the global one")
    p.add_argument("--images", help="image root for COCO/VOC annotations (default: next to the annotations)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="train without rows that fail validation (listed in the card) instead of failing")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="do not use ImageNet weights")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores, or one if the machine is busy)")
    p.add_argument("--work-dir", help="checkpoints, exported model and data report (default: var/train/NAME-TIME)")
    p.add_argument("--resume", help="checkpoint.pt to continue from (its arguments are reused)")
    p.set_defaults(func=run)


def _model_name(text: str) -> str:
    """Checked before hours of training, not at publishing time."""
    from schemas.model_refs import RefError, check_name

    try:
        return check_name(text)
    except RefError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from models.training.engine import load_checkpoint_args
    from models.training.job import JobArgs, run as run_job
    from schemas.errors import UserError

    values = vars(args).copy()
    if args.resume:
        saved = load_checkpoint_args(args.resume)
        values.update({k: saved[k] for k in RESUMABLE if k in saved})
        values["work_dir"] = args.work_dir or saved.get("work_dir")
    if not values.get("data"):
        raise UserError("--data is required (or --resume CHECKPOINT)")
    values["registry"] = registry_root(args)
    run_job(JobArgs.from_dict(values))
    return 0
