"""preprocess() produces exactly the tensor the card describes (size, crop, normalisation, layout, channels)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from pipelines.preprocess import draft_size_for, preprocess, resize_for_model
from schemas.card import Preprocessing


def _half_red_half_blue(w: int = 200, h: int = 100) -> Image.Image:
    img = Image.new("RGB", (w, h), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, w // 2, h))
    return img


def test_stretch_normalises_with_card_mean_and_std_in_chw():
    spec = Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    out = preprocess(Image.new("RGB", (64, 48), (255, 0, 51)), spec)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out[:, 5, 5], [(1 - 0.5) / 0.25, (0 - 0.5) / 0.25, (0.2 - 0.5) / 0.25], atol=1e-5)


def test_stretch_keeps_everything_in_view_and_centre_crop_cuts_the_sides():
    stretch = resize_for_model(_half_red_half_blue(), Preprocessing(input_size=20, resize="stretch"))
    assert stretch.size == (20, 20) and stretch.getpixel((2, 10)) == (255, 0, 0)
    crop_spec = Preprocessing(input_size=20, resize="shorter_side_center_crop", resize_shorter=20)
    crop = resize_for_model(_half_red_half_blue(400, 100), crop_spec)  # 80x20 -> centre 20x20
    assert crop.size == (20, 20)
    assert crop.getpixel((2, 10))[0] > 200 and crop.getpixel((17, 10))[2] > 200  # the boundary is centred


def test_bgr_and_nhwc_layouts():
    spec = Preprocessing(input_size=8, channel_order="BGR", layout="NHWC", mean=(0.1, 0.2, 0.3),
                         std=(1.0, 1.0, 1.0))
    out = preprocess(Image.new("RGB", (8, 8), (255, 0, 0)), spec)
    assert out.shape == (8, 8, 3)
    np.testing.assert_allclose(out[0, 0], [0 - 0.3, 0 - 0.2, 1 - 0.1], atol=1e-5)  # B, G, R


def test_draft_size_never_goes_below_what_the_resize_needs():
    assert draft_size_for(Preprocessing(input_size=224)) == (224, 224)
    spec = Preprocessing(input_size=224, resize="shorter_side_center_crop", resize_shorter=256)
    assert draft_size_for(spec) == (256, 256)


def test_centre_crop_of_an_extreme_aspect_ratio_needs_no_gigapixel_intermediate():
    """An 8 x 200 000 strip (3 KB as PNG) would be resized to 256 x 6 400 000 (6.5 GB as RGB) before the crop:
    only the kept region is resized, in a process limited to 2 GB of address space, with the pixels the
    resize-then-crop gives (checked on a strip small enough for both ways)."""
    import subprocess
    import sys

    spec = Preprocessing(input_size=224, resize="shorter_side_center_crop", resize_shorter=256)
    strip = Image.fromarray((np.linspace(0, 255, 3000)[None, :, None] * np.ones((8, 1, 3))).astype(np.uint8))
    nw, nh = 96000, 256
    left, top = (nw - 224) // 2, (nh - 224) // 2
    expected = strip.resize((nw, nh), Image.Resampling.BILINEAR).crop((left, top, left + 224, top + 224))
    assert np.array_equal(np.asarray(resize_for_model(strip, spec)), np.asarray(expected))
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
            "from PIL import Image\nfrom pipelines.preprocess import preprocess\nfrom schemas.card import Preprocessing\n"
            "spec = Preprocessing(input_size=224, resize='shorter_side_center_crop', resize_shorter=256)\n"
            "print(preprocess(Image.new('RGB', (8, 200_000), (9, 99, 199)), spec).shape)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "(3, 224, 224)", done.stderr[-2000:]
