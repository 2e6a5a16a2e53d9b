"""The confusion-matrix heat map of `--mode=eval`, drawn with numpy and PIL.

Matplotlib would cost an evaluation more than half a second (most of it the
import of pyplot) for one picture; this draws the same content directly: one
square per (true, predicted) pair coloured by the fraction of the true class
(white to dark blue), the counts in the squares up to 12 classes, class names
on both axes up to 30 classes, a colour bar and a title.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnnjax.training.files import atomic_write

# Anchors of a white-to-blue colour map (sequential, light = few), at fractions 0, 1/4, 1/2, 3/4, 1.
_ANCHORS = np.array([(247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107)], np.float64)
MAX_NAMED = 30  # more classes than this: no class names on the axes
MAX_COUNTED = 12  # more classes than this: no counts in the squares
_PAD = 8


def colors(fractions: np.ndarray) -> np.ndarray:
    """uint8 RGB colours (..., 3) of fractions in [0, 1]."""
    points = np.linspace(0.0, 1.0, len(_ANCHORS))
    fractions = np.clip(np.asarray(fractions, np.float64), 0.0, 1.0)
    channels = [np.interp(fractions, points, _ANCHORS[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the squares are: square (i, j) spans x in [left + j*cell, +cell), y in [top + i*cell, +cell)."""

    left: int
    top: int
    cell: int


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):  # PIL without FreeType: its small bitmap font
        return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    box = font.getbbox(text)
    return box[2] - box[0], box[3]


def _vertical(canvas: Image.Image, xy: tuple[int, int], text: str, font, fill=(0, 0, 0)) -> None:
    """Text rotated to read bottom-up, its top-left corner at `xy`."""
    width, height = _text_size(font, text)
    label = Image.new("L", (max(width, 1), max(height, 1)), 0)
    ImageDraw.Draw(label).text((0, 0), text, font=font, fill=255)
    label = label.rotate(90, expand=True)
    canvas.paste(Image.new("RGB", label.size, fill), xy, label)


def render(confusion: np.ndarray, class_names, title: str) -> tuple[Image.Image, Layout]:
    """The heat map of `confusion` (rows: true class, columns: predicted), row-normalised."""
    confusion = np.asarray(confusion)
    count = len(class_names)
    normalised = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    cell = int(np.clip(720 // max(count, 1), 4, 48))
    font = _font(12)
    named = count <= MAX_NAMED
    names = [str(n) for n in class_names] if named else []
    name_width = max((_text_size(font, n)[0] for n in names), default=0)
    line = _text_size(font, "Ag")[1]
    side = 2 * _PAD + line + (name_width + _PAD if named else 0)  # axis title, then the class names
    left, top = side, 2 * _PAD + line
    grid = cell * count
    bar_left = left + grid + 3 * _PAD
    bar_width = 14
    tick_width = _text_size(font, "0.5")[0]
    width = max(bar_left + bar_width + 3 * _PAD + tick_width + line, _text_size(font, title)[0] + 2 * _PAD)
    height = top + grid + side

    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    pixels = np.asarray(canvas).copy()
    pixels[top:top + grid, left:left + grid] = np.repeat(np.repeat(colors(normalised), cell, 0), cell, 1)
    ramp = colors(np.linspace(1.0, 0.0, grid))[:, None, :]
    pixels[top:top + grid, bar_left:bar_left + bar_width] = ramp
    canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((left - 1, top - 1, left + grid, top + grid), outline=(0, 0, 0))
    draw.rectangle((bar_left - 1, top - 1, bar_left + bar_width, top + grid), outline=(0, 0, 0))
    draw.text((_PAD, _PAD), title, font=font, fill=(0, 0, 0))
    for value in (0.0, 0.5, 1.0):
        y = top + round((1.0 - value) * (grid - 1))
        draw.line((bar_left + bar_width, y, bar_left + bar_width + 4, y), fill=(0, 0, 0))
        draw.text((bar_left + bar_width + 6, y - line // 2), f"{value:g}", font=font, fill=(0, 0, 0))
    caption = "fraction of the true class"
    _vertical(canvas, (bar_left + bar_width + 2 * _PAD + tick_width, top + max(0, (grid - _text_size(font, caption)[0]) // 2)),
              caption, font)
    for i, name in enumerate(names):
        centre = top + i * cell + cell // 2
        draw.text((left - _PAD - _text_size(font, name)[0], centre - line // 2), name, font=font, fill=(0, 0, 0))
        _vertical(canvas, (left + i * cell + cell // 2 - line // 2, top + grid + _PAD), name, font)
    axis_x, axis_y = "predicted", "true"
    draw.text((left + (grid - _text_size(font, axis_x)[0]) // 2, height - _PAD - line), axis_x, font=font,
              fill=(0, 0, 0))
    _vertical(canvas, (_PAD, top + (grid - _text_size(font, axis_y)[0]) // 2), axis_y, font)
    if count <= MAX_COUNTED:
        for i, j in zip(*np.nonzero(confusion)):
            text = str(int(confusion[i, j]))
            text_width = _text_size(font, text)[0]
            fill = (255, 255, 255) if normalised[i, j] > 0.5 else (0, 0, 0)
            draw.text((left + j * cell + (cell - text_width) // 2, top + i * cell + (cell - line) // 2), text,
                      font=font, fill=fill)
    return canvas, Layout(left=left, top=top, cell=cell)


def save_confusion_matrix(path: str, confusion: np.ndarray, class_names, title: str) -> None:
    """Writes the heat map as a PNG (temp file + rename)."""
    image, _ = render(confusion, class_names, title)
    with atomic_write(path, "wb") as f:
        image.save(f, format="PNG")
