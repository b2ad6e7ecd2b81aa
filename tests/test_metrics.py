"""Metrics against cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelchat.evaluation import metrics


def test_adherence_counts_only_named_attributes():
    preds = [{"time": "day", "water": "sea"}, {"time": "night", "water": "lake"},
             {"time": "day", "water": "none"}, {"time": "day"}]
    targets = [{"time": "day"}, {"time": "day", "water": "lake"}, {"water": "none"}, {}]
    a = metrics.adherence(preds, targets)
    assert a.per_attribute == {"time": 0.5, "water": 1.0}
    assert a.counts == {"time": 2, "water": 2}
    assert a.adherence == pytest.approx(0.75)
    assert a.exact_match == pytest.approx(2 / 3)  # the image with no named attribute is not scored


def test_a_known_attribute_swap_lowers_adherence_by_the_expected_amount():
    rng = np.random.default_rng(0)
    times = ["day", "sunset", "night"]
    targets = [{"time": times[i % 3], "house": "yes" if i % 2 else "no"} for i in range(60)]
    perfect = metrics.adherence([dict(t) for t in targets], targets)
    assert perfect.adherence == 1.0 and perfect.exact_match == 1.0
    swapped = [dict(t) for t in targets]
    flip = rng.choice(60, 15, replace=False)
    for i in flip:  # a quarter of the images show the wrong time of day
        swapped[i]["time"] = times[(times.index(swapped[i]["time"]) + 1) % 3]
    a = metrics.adherence(swapped, targets)
    assert a.per_attribute["time"] == pytest.approx(0.75)
    assert a.per_attribute["house"] == 1.0
    assert a.adherence == pytest.approx(1.0 - 0.25 / 2)
    assert a.exact_match == pytest.approx(0.75)


def test_missing_prediction_counts_as_wrong_and_bad_input_is_refused():
    a = metrics.adherence([{"clouds": "none"}], [{"cloud_color": "pink"}])
    assert a.adherence == 0.0
    with pytest.raises(ValueError):
        metrics.adherence([{}], [{}, {}])
    with pytest.raises(ValueError, match="names any attribute"):
        metrics.adherence([{}], [{}])


def test_shuffled_floor_scores_against_other_prompts():
    prompts = [{"time": "day"}, {"time": "night"}]
    preds = [{"time": "day"}] * 3 + [{"time": "night"}] * 3  # a model that follows every prompt
    floor = metrics.shuffled_floor(preds, prompts, 3, np.random.default_rng(0))
    assert floor.adherence == 0.0  # with two prompts the only derangement swaps them
    p = metrics.derangement(50, np.random.default_rng(1))
    assert sorted(p) == list(range(50)) and not (p == np.arange(50)).any()


def _channel_means(images):
    """Hand-checkable features: per-channel means of uint8 images, centred and scaled."""
    return (images.double().mean(dim=(2, 3)) - 128) / 64


def test_fd_is_zero_for_identical_sets_and_the_mean_shift_for_shifted_ones():
    g = torch.Generator().manual_seed(0)
    real = torch.randint(40, 200, (64, 3, 8, 8), generator=g, dtype=torch.uint8)
    same = metrics.fd_kid(_channel_means(real), _channel_means(real.clone()))
    assert same["fd"] == pytest.approx(0.0, abs=1e-6)
    shifted = metrics.fd_kid(_channel_means(real), _channel_means(real + 32))  # means moved by 32/64 per channel
    assert shifted["fd"] == pytest.approx(3 * 0.5**2, rel=1e-4)  # same covariance: FD = |Δμ|²
    assert abs(same["kid"]) < 0.05 * shifted["kid"]
    with pytest.raises(ValueError, match="feature sizes differ"):
        metrics.fd_kid(_channel_means(real), _channel_means(real)[:, :2])


def test_prdc_extremes():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 4, generator=g)
    same = metrics.prdc(real, real.clone(), k=5)
    assert same["precision"] == 1.0 and same["recall"] == 1.0 and same["coverage"] == 1.0
    far = metrics.prdc(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    collapsed = metrics.prdc(real, real[:1].repeat(200, 1) + 1e-3 * torch.randn(200, 4, generator=g), k=5)
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.1  # one mode: precise, no recall


def test_diversity_and_near_duplicates():
    g = torch.Generator().manual_seed(0)
    real = [torch.randn(4, 8, generator=g) for _ in range(3)]
    copies = [r[:1].repeat(4, 1) for r in real]  # every prompt gives one picture four times
    d = metrics.diversity(copies, real)
    assert d["mean_pairwise"] == 0.0 and d["near_duplicates"] == 1.0
    d = metrics.diversity(real, real)
    assert d["mean_pairwise"] == pytest.approx(d["real_mean_pairwise"]) and d["near_duplicates"] == 0.0
