"""Decoding one image file's bytes to a uint8 array, the way every in-memory loader does.

PIL decodes; plain 8-bit Huffman JPEGs (nearly every photo data set) go
straight to PIL's JPEG decoder, without PIL's per-image Python header
parsing: the same decoder, arguments and pixels, in about half the time for
small images. Grayscale modes stay one channel, everything else becomes RGB.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})  # PIL modes decoded to one channel
_PLAIN_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended and progressive Huffman


def _jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, components) of an 8-bit Huffman JPEG without an Adobe marker; None otherwise."""
    if not data.startswith(b"\xff\xd8"):
        return None
    position, end, frame = 2, len(data), None
    while position + 4 <= end:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            position += 2
            continue
        if marker == 0xDA:  # start of scan: the header is complete
            return frame
        length = (data[position + 2] << 8) | data[position + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in _PLAIN_JPEG_FRAMES or length < 8 or data[position + 4] != 8:
                return None
            segment = data[position + 5:position + 10]
            frame = ((segment[2] << 8) | segment[3], (segment[0] << 8) | segment[1], segment[4])
        elif marker == 0xEE and data[position + 4:position + 9] == b"Adobe":
            return None  # colour transform conventions: left to PIL's own reader
        position += 2 + length
    return None


def _decode_plain_jpeg(data: bytes) -> np.ndarray | None:
    """PIL's own JPEG decoder run on the whole file, without PIL's per-image Python header parsing.

    The pixels are those of `Image.open(...)`: the same decoder with the same
    arguments (mode L or RGB, from the frame's component count) on the same
    bytes. Half the time for small images (where the parsing dominates). None
    for anything unusual (then the caller opens the image the ordinary way).
    """
    frame = _jpeg_frame(data)
    if frame is None:
        return None
    width, height, components = frame
    limit = Image.MAX_IMAGE_PIXELS
    if components not in (1, 3) or not width or not height or (limit and width * height > limit):
        return None
    mode = "L" if components == 1 else "RGB"
    try:
        image = Image.new(mode, (width, height))
        decoder = Image._getdecoder(mode, "jpeg", (mode, ""))
        decoder.setimage(image.im, (0, 0, width, height))
        try:
            status, error = decoder.decode(data)
        finally:
            decoder.cleanup()
    except Exception:  # noqa: BLE001 (a PIL without this decoder interface: the ordinary way)
        return None
    if status >= 0 or error < 0:  # truncated or broken: the ordinary way decides
        return None
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def decode_image(data: bytes, name: str) -> np.ndarray | None:
    """Decodes one image to uint8 (H, W, 1) or (H, W, 3); None when it cannot be decoded."""
    fast = _decode_plain_jpeg(data)
    if fast is not None:
        return fast
    try:
        with Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            image = image.convert("L" if mode in GRAY_MODES else "RGB")
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return array[..., None] if array.ndim == 2 else array
