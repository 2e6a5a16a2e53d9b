"""The CIFAR-10 speed run's parts: data, optimiser, compiled programs, reporting.

`experiments/cifar10_speedrun.py` puts them together and times them.
"""
