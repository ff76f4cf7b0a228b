"""The Fréchet distance behind FID and FVD: zero for identical sets, monotone in noise, equal to scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from vividhead.evaluation.frechet import feature_stats, frechet_distance, frechet_distance_features


def _direct(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook formula written out with numpy and scipy, independently of the module."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root))


def test_identical_sets_give_exactly_zero():
    x = np.random.default_rng(0).standard_normal((200, 16))
    assert frechet_distance_features(x, x.copy()) == 0.0


def test_grows_monotonically_with_noise():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((400, 12))
    noise = rng.standard_normal(x.shape)
    distances = [frechet_distance_features(x, x + level * noise) for level in (0.1, 0.5, 1.5)]
    assert 0 < distances[0] < distances[1] < distances[2]


@pytest.mark.parametrize("seed", [2, 3])
def test_agrees_with_direct_scipy_computation(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, 10))
    y = 0.8 * rng.standard_normal((250, 10)) @ rng.standard_normal((10, 10)) * 0.5 + 0.3
    ours = frechet_distance_features(x, y)
    assert ours == pytest.approx(_direct(x, y), rel=1e-9)
    assert ours > 1.0


def test_few_samples_route_agrees_with_scipy():
    # Fewer samples than dimensions: the nuclear-norm route, against sqrtm on the singular product.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((12, 64))
    y = 1.5 * rng.standard_normal((9, 64)) + 0.2
    assert frechet_distance_features(x, y) == pytest.approx(_direct(x, y), rel=1e-6)


def test_one_dimensional_closed_form():
    # For 1-D Gaussians d^2 = (m1 - m2)^2 + (s1 - s2)^2.
    a = feature_stats(np.array([[0.0], [2.0]]))            # mean 1, var 2
    b = feature_stats(np.array([[3.0], [5.0], [7.0]]))     # mean 5, var 4
    assert frechet_distance(a, b) == pytest.approx(16 + (np.sqrt(2) - 2) ** 2)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 2"):
        feature_stats(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance_features(np.ones((3, 4)) * np.arange(3)[:, None], np.ones((3, 5)) * np.arange(3)[:, None])
