"""The training loop: frozen-backbone warm-up, then fine-tuning with a cosine schedule and early stopping.

Small datasets on a CPU are the design point: the head alone learns fast while the pretrained backbone stays
intact, then everything fine-tunes at a lower backbone learning rate. The best epoch by validation mAP is kept.
Every epoch writes a checkpoint carrying the job's arguments, so ``--resume`` continues exactly where it stopped.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from models.training.losses import make_loss
from models.training.metrics import mean_average_precision

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    warmup_epochs: int = 2  # head only, backbone frozen
    batch_size: int = 32
    lr: float = 2e-3
    backbone_lr_mult: float = 0.1
    finetune_fraction: float = 0.3  # share of the backbone (its last parameter tensors) that fine-tunes
    weight_decay: float = 1e-4
    patience: int = 3  # epochs without val-mAP improvement before stopping
    loss: str = "weighted_bce"
    seed: int = 0
    device: str = "auto"


@dataclass
class TrainData:
    train_images: np.ndarray  # (N, 3, S, S) uint8, augmented per batch
    train_targets: np.ndarray  # (N, C) float32
    val_inputs: np.ndarray  # (M, 3, s, s) float32, preprocessed exactly as consumers do
    val_targets: np.ndarray


@dataclass
class FitResult:
    model: Any  # torch module holding the best epoch's weights
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_map: float = math.nan
    stopped_early: bool = False
    device: str = "cpu"

    @property
    def images_per_s(self) -> float:
        rates = sorted(h["images_per_s"] for h in self.history)
        return float(rates[len(rates) // 2]) if rates else math.nan


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        from schemas.errors import UserError

        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return name


def choose_threads(requested: int | None = None) -> int:
    """CPU threads for torch and onnxruntime: all cores on a quiet machine, one on a busy one.

    Measured on this 2-core machine with other jobs running: MobileNetV2 inference ran 2x faster on one thread
    than on two (OpenMP workers spin-wait for a core that another process holds), while on a quiet machine two
    threads are ~1.7x faster than one. The load average at start decides; ``--threads`` overrides.
    """
    cores = os.cpu_count() or 1
    if requested:
        return max(1, requested)
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores
    return cores if load < cores / 2 else max(1, cores // 2)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def predict_torch(model, inputs: np.ndarray, device: str, batch_size: int = 64) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(inputs[i : i + batch_size]).to(device)
            out.append(torch.sigmoid(model(batch)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def fit(
    built,
    data: TrainData,
    config: TrainConfig,
    augment: Callable,
    checkpoint_path: str,
    job_args: dict,
    resume_from: str | None = None,
    progress=None,
) -> FitResult:
    """Train; ``progress`` is a pipelines.progress.ProgressStyle (default: chosen for stderr)."""
    import torch

    from pipelines.progress import ProgressStyle

    progress = progress or ProgressStyle.choose(sys.stderr)

    seed_everything(config.seed)
    device = resolve_device(config.device)
    model = built.model.to(device)
    head = [p for n, p in model.named_parameters() if built.is_head(n)]
    backbone = [p for n, p in model.named_parameters() if not built.is_head(n)]
    # Only the deepest layers fine-tune: on small data they are the ones worth adapting, and backward passes
    # through the early high-resolution layers are most of the cost on a CPU.
    backbone = backbone[len(backbone) - round(len(backbone) * config.finetune_fraction):]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [
            {"params": head, "lr": config.lr},
            {"params": backbone, "lr": config.lr * config.backbone_lr_mult},
        ],
        weight_decay=config.weight_decay,
    )
    n = len(data.train_images)
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    total_steps = steps_per_epoch * max(config.epochs, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.02, 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
    )
    loss_fn = make_loss(config.loss, data.train_targets)
    if hasattr(loss_fn, "to"):
        loss_fn = loss_fn.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    state = {"epoch": 0, "history": [], "best_state": None, "best_map": -1.0, "best_epoch": 0, "bad_epochs": 0}
    if resume_from:
        ckpt = torch.load(resume_from, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        generator.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["torch_rng"])
        state = {k: ckpt[k] for k in state}
        print(f"resumed from {resume_from} after epoch {state['epoch']}", flush=True)
    targets = torch.from_numpy(data.train_targets.astype(np.float32))
    images = torch.from_numpy(data.train_images)
    stopped = False
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        frozen = epoch <= config.warmup_epochs
        for p in backbone:
            p.requires_grad_(not frozen)
        row = _train_epoch(model, images, targets, optimizer, scheduler, loss_fn, augment, generator, config, device,
                           epoch, progress, frozen)
        row["phase"] = "head" if frozen else "finetune"
        val_probs = predict_torch(model, data.val_inputs, device)
        val_map, _ = mean_average_precision(data.val_targets, val_probs)
        row["val_mAP"] = float(val_map)
        state["history"].append(row)
        if val_map > state["best_map"] + 1e-6:
            state.update(best_map=float(val_map), best_epoch=epoch, bad_epochs=0)
            state["best_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        print(
            f"epoch {epoch}/{config.epochs} [{row['phase']}] loss {row['loss']:.4f} val mAP {val_map:.4f} "
            f"{row['images_per_s']:.1f} img/s {row['seconds']:.1f}s",
            flush=True,
        )
        _save_checkpoint(checkpoint_path, model, optimizer, scheduler, generator, state, job_args, config)
        if not frozen and state["bad_epochs"] >= config.patience:
            print(f"early stop: no val mAP gain for {config.patience} epochs", flush=True)
            stopped = True
            break
    if not any(h.get("images", 1) for h in state["history"]):
        from schemas.errors import UserError

        raise UserError(f"no training step ran ({len(images)} training images, batch size {config.batch_size}, "
                        f"{config.epochs} epochs); nothing is published")
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model = model.cpu().eval()
    return FitResult(model, state["history"], state["best_epoch"], state["best_map"], stopped, device)


def _train_epoch(model, images, targets, optimizer, scheduler, loss_fn, augment, generator, config, device, epoch,
                 progress, frozen: bool = False):
    import torch

    model.train()
    if frozen:  # a frozen backbone keeps its BatchNorm statistics too (train mode would keep moving them)
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
    order = torch.randperm(len(images), generator=generator)
    seen, total_loss, start = 0, 0.0, time.perf_counter()
    with _EpochProgress(progress, len(images), f"epoch {epoch}/{config.epochs}") as bar:
        for i in range(0, len(images), config.batch_size):
            idx = order[i : i + config.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a single image
                continue
            batch = augment(images[idx]).to(device)
            loss = loss_fn(model(batch), targets[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(idx)
            total_loss += loss.item() * len(idx)
            bar.update(len(idx), total_loss / seen, seen / max(time.perf_counter() - start, 1e-9))
    seconds = time.perf_counter() - start
    return {
        "epoch": epoch,
        "loss": total_loss / max(seen, 1),
        "images": seen,
        "images_per_s": seen / max(seconds, 1e-9),
        "seconds": seconds,
        "lr": optimizer.param_groups[0]["lr"],
    }


class _EpochProgress:
    """A tqdm bar on a terminal; in a log one plain line per interval; nothing when progress is off."""

    def __init__(self, style, total: int, desc: str) -> None:
        self.style, self.total, self.desc, self.seen = style, total, desc, 0
        self.bar = None
        if style.mode == "live":
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="img", file=style.stream, leave=False,
                            mininterval=style.interval)
        else:
            from pipelines.progress import IntervalProgress

            self.lines = IntervalProgress(style)

    def __enter__(self) -> "_EpochProgress":
        return self

    def update(self, n: int, loss: float, rate: float) -> None:
        self.seen += n
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.1f}")
        else:
            self.lines.update(lambda: f"{self.desc}: {self.seen}/{self.total} images, loss {loss:.4f}, "
                                      f"{rate:.1f} img/s")

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _save_checkpoint(path, model, optimizer, scheduler, generator, state, job_args, config) -> None:
    import torch

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {
        "args": job_args,
        "config": asdict(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        **copy.copy(state),
    }
    tmp = f"{path}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-save never leaves a truncated checkpoint


def load_checkpoint_args(path: str) -> dict:
    """The job arguments a checkpoint was written with (``--resume`` reuses them)."""
    import torch

    from schemas.errors import UserError

    if not os.path.exists(path):
        raise UserError(f"--resume: checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise UserError(f"--resume: {path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if "args" not in ckpt:
        raise UserError(f"--resume: {path} is not a tagger training checkpoint")
    return dict(ckpt["args"])
