"""Lowerings of model operations that run faster on CPU, equal to XLA's in values and gradients.

`conv`: im2col and banded-matmul convolutions, the `conv_impl` choice and when
blocks unroll; `onednn`: oneDNN's convolutions as XLA custom calls (built once
per machine from `onednn_conv.cc`); `pool`: max pooling over tiles with a cheap
custom gradient.
`cnnjax.models.layers` picks among them; nothing here knows a model.
"""
