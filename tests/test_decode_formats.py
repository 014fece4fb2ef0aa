"""decode_image turns every supported format and pixel mode into the RGB image a viewer would show."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, features

from pipelines.decode import DecodeError, decode_image
from tests.bad_inputs import bad_files

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _centre(img: Image.Image) -> tuple[int, int, int]:
    return img.getpixel((img.width // 2, img.height // 2))


def _close(a, b, tol=12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


@pytest.mark.parametrize(
    "fmt,kw",
    [("JPEG", {"quality": 95}), ("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"quality": 95})],
)
def test_each_format_decodes_to_rgb_with_its_size(fmt, kw):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow build has no WebP")
    out = decode_image(_encode(Image.new("RGB", (64, 48), RED), fmt, **kw))
    assert out.image.mode == "RGB" and (out.width, out.height) == (64, 48) and out.format == fmt
    assert _close(_centre(out.image), RED)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = decode_image(buf.getvalue())
    assert out.format == "GIF" and _close(_centre(out.image), RED, tol=30)


def test_exif_orientation_is_applied_and_reported_size_is_upright():
    img = Image.new("RGB", (80, 40), BLUE)
    img.paste(RED, (0, 0, 40, 40))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90 degrees clockwise
    out = decode_image(_encode(img, "JPEG", quality=95, exif=exif))
    assert (out.width, out.height) == (40, 80) == out.image.size
    assert _close(out.image.getpixel((20, 10)), RED, tol=30)  # the left half is now on top
    assert _close(out.image.getpixel((20, 70)), BLUE, tol=30)


def test_palette_with_transparency_is_composited_on_white():
    img = Image.new("P", (32, 32), 0)
    img.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    img.info["transparency"] = 0
    out = decode_image(_encode(img, "PNG", transparency=0))
    assert out.image.mode == "RGB" and _close(_centre(out.image), (255, 255, 255), tol=0)


def test_alpha_is_composited_on_white():
    img = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent red
    img.paste((0, 0, 255, 255), (0, 0, 16, 32))
    out = decode_image(_encode(img, "PNG"))
    assert out.image.getpixel((24, 16)) == (255, 255, 255)
    assert out.image.getpixel((8, 16)) == (0, 0, 255)


def test_cmyk_jpeg_becomes_rgb():
    out = decode_image(_encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95))
    assert out.image.mode == "RGB" and _close(_centre(out.image), (255, 0, 0), tol=20)


def test_16_bit_greyscale_is_scaled_to_8_bit():
    arr = np.full((16, 16), 32768, dtype=np.uint16)
    out = decode_image(_encode(Image.fromarray(arr), "PNG"))
    assert out.image.mode == "RGB" and _close(_centre(out.image), (128, 128, 128), tol=2)


def test_greyscale_becomes_three_equal_channels():
    out = decode_image(_encode(Image.new("L", (16, 16), 77), "PNG"))
    assert out.image.getpixel((5, 5)) == (77, 77, 77)


def test_jpeg_draft_decodes_smaller_but_reports_the_original_size():
    big = Image.new("RGB", (2000, 1500), RED)
    out = decode_image(_encode(big, "JPEG"), draft_size=(224, 224))
    assert (out.width, out.height) == (2000, 1500)
    assert 224 <= min(out.image.size) < 1500  # DCT-scaled, never below what the model needs


@pytest.mark.parametrize("name", [n for n, (_, outcome) in bad_files().items() if outcome])
def test_bad_inputs_raise_decode_error_with_reason(name):
    data, (_, reason) = bad_files()[name]
    with pytest.raises(DecodeError) as info:
        decode_image(data)
    assert info.value.reason == reason
    assert "\n" not in str(info.value) and "BytesIO" not in str(info.value)
