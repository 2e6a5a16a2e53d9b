"""Seeded stratified splitting and subsetting."""

from __future__ import annotations

import numpy as np
import pytest

from cnnjax.data.splits import stratified_split, stratified_subset


def test_split_partitions_each_class():
    labels = np.repeat(np.arange(3), [10, 21, 7])
    split = stratified_split(labels, 0.1, 0.2, seed=0)
    together = np.concatenate([split["train"], split["validation"], split["test"]])
    assert sorted(together.tolist()) == list(range(len(labels)))
    # Per class: round-half-up of 70% to train, of 10% to validation, rest to test.
    assert np.bincount(labels[split["train"]]).tolist() == [7, 15, 5]
    assert np.bincount(labels[split["validation"]], minlength=3).tolist() == [1, 2, 1]
    assert np.bincount(labels[split["test"]], minlength=3).tolist() == [2, 4, 1]
    assert all(np.all(np.diff(v) > 0) for v in split.values())


def test_split_is_seeded():
    labels = np.arange(100) % 4
    a, b, c = (stratified_split(labels, seed=s) for s in (0, 0, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError):
        stratified_split(np.zeros(5, int), 0.6, 0.6)
    with pytest.raises(ValueError):
        stratified_split(np.zeros(5, int), -0.1, 0.1)


def test_subset_is_proportional_capped_and_nested():
    labels = np.repeat(np.arange(2), [60, 20])
    subset = stratified_subset(labels, 20)
    assert np.bincount(labels[subset]).tolist() == [15, 5]
    assert set(stratified_subset(labels, 8).tolist()) <= set(subset.tolist())
    capped = stratified_subset(labels, max_per_class=10)
    assert np.bincount(labels[capped]).tolist() == [10, 10]
    assert np.array_equal(stratified_subset(labels), np.arange(80))
    with pytest.raises(ValueError):
        stratified_subset(labels, -1)
