"""JPEG decoding without PIL's header parsing: the same pixels as `Image.open`, or the ordinary way."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cnnjax.data import decode as image_decode
from cnnjax.data.decode import _decode_plain_jpeg, decode_image


def _ordinary(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image.convert("L" if image.mode in image_decode.GRAY_MODES else "RGB"), np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _jpeg(mode="RGB", size=(33, 17), **save) -> bytes:
    rng = np.random.default_rng(sum(size))
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else (4,) if mode == "CMYK" else ())
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    pixels[: size[1] // 2] //= 4  # some structure, so the coefficients are not all noise
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode).save(buffer, format="JPEG", **save)
    return buffer.getvalue()


PLAIN = {
    "rgb 4:2:0": _jpeg(),
    "rgb 4:4:4 q95": _jpeg(subsampling=0, quality=95),
    "gray": _jpeg("L"),
    "progressive": _jpeg(progressive=True),
    "optimized huffman": _jpeg(optimize=True),
    "restart markers": _jpeg(size=(96, 64), restart_marker_blocks=2),
    "exif and icc": _jpeg(exif=Image.Exif().tobytes(), icc_profile=b"\0" * 200),
    "large (decoded in several reads by PIL)": _jpeg(size=(640, 480), quality=100),
}


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_jpegs_take_the_fast_path_with_the_pixels_of_image_open(name):
    data = PLAIN[name]
    fast = _decode_plain_jpeg(data)
    assert fast is not None
    np.testing.assert_array_equal(fast, _ordinary(data))
    np.testing.assert_array_equal(decode_image(data, name), fast)


def test_other_files_go_the_ordinary_way_with_its_result():
    png = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(png, format="PNG")
    cmyk = _jpeg("CMYK")  # Adobe marker, four components
    for data in (png.getvalue(), cmyk):
        assert _decode_plain_jpeg(data) is None
        np.testing.assert_array_equal(decode_image(data, "x"), _ordinary(data))
    truncated = PLAIN["rgb 4:2:0"][: len(PLAIN["rgb 4:2:0"]) // 2]
    broken = PLAIN["gray"][:200] + b"\0" * 50
    for data in (truncated, broken, b"\xff\xd8\xff", b""):
        assert _decode_plain_jpeg(data) is None
        with pytest.raises(OSError):  # what Image.open does with them ...
            _ordinary(data)
        assert decode_image(data, "x") is None  # ... and so an undecodable image
