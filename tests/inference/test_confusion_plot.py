"""The confusion-matrix PNG: squares coloured by the row-normalised fraction, read back from the file."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cnnjax.inference.confusion_plot import colors, render, save_confusion_matrix


def test_colour_map_runs_from_near_white_to_dark_blue_monotonically():
    ramp = colors(np.linspace(0, 1, 50)).astype(int)
    assert ramp[0].tolist() == [247, 251, 255] and ramp[-1].tolist() == [8, 48, 107]
    assert (np.diff(ramp.sum(axis=1)) <= 0).all()  # darker as the fraction grows
    assert colors(np.array([-1.0, 2.0])).tolist() == [[247, 251, 255], [8, 48, 107]]


def test_each_square_has_the_colour_of_its_fraction_of_the_true_class(tmp_path):
    confusion = np.array([[8, 2, 0], [0, 5, 5], [1, 1, 2]])
    path = str(tmp_path / "cm.png")
    save_confusion_matrix(path, confusion, ["cat", "dog", "a much longer class name"], "title")
    pixels = np.asarray(Image.open(path).convert("RGB"))
    _, layout = render(confusion, ["cat", "dog", "a much longer class name"], "title")
    fractions = confusion / confusion.sum(axis=1, keepdims=True)
    for i in range(3):
        for j in range(3):
            # A corner of the square: its middle holds the count.
            y, x = layout.top + i * layout.cell + 2, layout.left + j * layout.cell + 2
            assert pixels[y, x].tolist() == colors(fractions[i, j]).tolist(), (i, j)


def test_many_classes_fit_and_an_absent_class_is_white():
    confusion = np.eye(100, dtype=int) * 3
    confusion[7] = 0  # no example of class 7
    image, layout = render(confusion, [str(i) for i in range(100)], "title")
    pixels = np.asarray(image)
    assert max(image.size) <= 1200 and layout.cell >= 4
    corner = (layout.top + 7 * layout.cell + 1, layout.left + 7 * layout.cell + 1)
    assert pixels[corner].tolist() == colors(0.0).tolist()
    corner = (layout.top + 8 * layout.cell + 1, layout.left + 8 * layout.cell + 1)
    assert pixels[corner].tolist() == colors(1.0).tolist()
