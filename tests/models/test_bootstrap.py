"""The cluster bootstrap of paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics.bootstrap import paired_difference


def test_a_clear_difference_has_an_interval_that_excludes_zero() -> None:
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(20), 5)
    b = rng.normal(size=100)
    out = paired_difference(b + 0.5 + rng.normal(0, 0.1, size=100), b, clusters)
    assert 0.4 < out["low"] < out["mean"] < out["high"] < 0.6
    assert out["clusters"] == 20 and out["samples"] == 100 and out["clusters_above"] == 20


def test_no_difference_gives_an_interval_around_zero_and_is_symmetric() -> None:
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(30), 4)
    a, b = rng.normal(size=120), rng.normal(size=120)
    ab, ba = paired_difference(a, b, clusters), paired_difference(b, a, clusters)
    assert ab["low"] < 0 < ab["high"]
    assert ab["mean"] == pytest.approx(-ba["mean"])
    assert ab["clusters_above"] == ba["clusters_below"]


def test_resampling_clusters_widens_the_interval_when_samples_of_a_cluster_agree() -> None:
    rng = np.random.default_rng(2)
    clusters = np.repeat(np.arange(10), 10)
    shared = np.repeat(rng.normal(size=10), 10)  # every sample of a person moves together
    diff = shared + rng.normal(0, 0.01, size=100)
    grouped = paired_difference(diff, np.zeros(100), clusters)
    alone = paired_difference(diff, np.zeros(100), np.arange(100))
    assert grouped["high"] - grouped["low"] > 2 * (alone["high"] - alone["low"])


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="alike"):
        paired_difference(np.zeros(3), np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        paired_difference(np.array([0.0, np.nan]), np.zeros(2), np.arange(2))
    with pytest.raises(ValueError, match="two clusters"):
        paired_difference(np.zeros(3), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="level"):
        paired_difference(np.zeros(3), np.zeros(3), np.arange(3), level=1.5)
