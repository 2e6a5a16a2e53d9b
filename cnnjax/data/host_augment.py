"""Host-side image decoding and augmentation for streaming input (TensorFlow ops).

Each function maps one *encoded* image (JPEG, PNG, BMP or GIF bytes) to a
square uint8 ``(size, size, channels)`` tensor inside a ``tf.data`` map:

* :func:`random_resized_crop` (training): a crop of random area (a fraction
  ``scale`` of the image) and aspect ratio (``ratio``, width / height, drawn
  log-uniformly by TF) resized to ``size``; then an optional left-right flip.
  A JPEG is decoded only inside the crop window (``decode_and_crop_jpeg``),
  which is what makes large images cheap.
* :func:`center_crop` (evaluation): the central square of side
  ``crop_fraction * min(height, width)`` resized to ``size``. With the default
  0.875 this is the usual "resize the shorter side to size / 0.875, then crop
  the centre size x size" (224 from 256), done by cropping first so a JPEG is
  decoded only where it is kept.

Randomness is stateless: every call takes a ``[2]`` int64 seed, so a stream is
a pure function of its seed and its example order. Bilinear resizing; the
result is rounded back to uint8 so host-to-device transfers stay small (the
step normalises on device).

TensorFlow is imported when a function is called, never at import time.
"""

from __future__ import annotations

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
EVAL_CROP_FRACTION = 0.875
_MAX_ATTEMPTS = 10


def _tf():
    import tensorflow as tf

    return tf


def _decode_window(encoded, window, channels: int):
    """Decodes ``window = [y, x, h, w]`` of an image; JPEG decodes only that window."""
    tf = _tf()

    def jpeg():
        return tf.io.decode_and_crop_jpeg(encoded, window, channels=channels)

    def other():
        image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
        return tf.slice(image, tf.stack([window[0], window[1], 0]), tf.stack([window[2], window[3], channels]))

    return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def image_shape(encoded, channels: int):
    """(height, width) of an encoded image; a JPEG is not decoded for it."""
    tf = _tf()

    def other():
        return tf.shape(tf.io.decode_image(encoded, channels=channels, expand_animations=False))[:2]

    return tf.cond(tf.io.is_jpeg(encoded), lambda: tf.io.extract_jpeg_shape(encoded)[:2], other)


def _to_uint8_square(image, size: int, channels: int):
    tf = _tf()
    resized = tf.image.resize(image, [size, size], method="bilinear")
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    return tf.ensure_shape(resized, [size, size, channels])


def _fallback_window(height, width, ratio: tuple[float, float]):
    """The centre crop used when no random box was found: the whole image,
    narrowed to the nearest allowed aspect ratio."""
    tf = _tf()
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    aspect = w / h
    crop_w = tf.where(aspect > ratio[1], tf.round(h * ratio[1]), w)
    crop_h = tf.where(aspect < ratio[0], tf.round(w / ratio[0]), h)
    crop_h = tf.cast(tf.clip_by_value(crop_h, 1.0, h), tf.int32)
    crop_w = tf.cast(tf.clip_by_value(crop_w, 1.0, w), tf.int32)
    return tf.stack([(height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w])


def random_resized_crop(
    encoded,
    seed,
    *,
    size: int,
    channels: int,
    flip: bool,
    scale: tuple[float, float] = SCALE,
    ratio: tuple[float, float] = RATIO,
):
    """Training view of one encoded image (see the module docstring).

    Args:
      encoded: Scalar string tensor, the encoded image.
      seed: ``[2]`` int64 tensor, this example's stateless seed.
      size: Output height and width.
      channels: Output channels (1 or 3); images are converted to it.
      flip: Whether to flip left-right with probability 1/2.
      scale: Range of the crop's area as a fraction of the image's.
      ratio: Range of the crop's aspect ratio (width / height).

    Returns:
      uint8 tensor ``(size, size, channels)``.
    """
    tf = _tf()
    box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    shape = image_shape(encoded, channels)
    begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.concat([shape, [channels]], axis=0),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        seed=box_seed,
        min_object_covered=scale[0],
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=_MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], box_size[0], box_size[1]])
    # TF returns the whole image when every attempt failed; a distorted whole
    # image is a poor sample, so fall back to a centre crop of allowed shape.
    whole = tf.reduce_all(tf.equal(box_size[:2], shape))
    window = tf.where(whole, _fallback_window(shape[0], shape[1], ratio), window)
    image = _to_uint8_square(_decode_window(encoded, window, channels), size, channels)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image


def center_crop(encoded, *, size: int, channels: int, crop_fraction: float = EVAL_CROP_FRACTION):
    """Evaluation view of one encoded image (see the module docstring).

    Args:
      encoded: Scalar string tensor, the encoded image.
      size: Output height and width.
      channels: Output channels (1 or 3).
      crop_fraction: Side of the central square relative to the shorter side.

    Returns:
      uint8 tensor ``(size, size, channels)``.
    """
    tf = _tf()
    shape = image_shape(encoded, channels)
    shorter = tf.cast(tf.reduce_min(shape), tf.float32)
    side = tf.maximum(tf.cast(tf.round(shorter * crop_fraction), tf.int32), 1)
    window = tf.stack([(shape[0] - side) // 2, (shape[1] - side) // 2, side, side])
    return _to_uint8_square(_decode_window(encoded, window, channels), size, channels)

