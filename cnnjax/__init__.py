"""cnnjax: functional JAX/Flax research code for convolutional networks."""

__version__ = "0.1.0"
