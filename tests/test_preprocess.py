"""The device-resident pyramid (densify.scan.preprocess) against the OpenCV host path.

Tolerance pinned here (and stated in the module docstring): resized grey levels differ from
OpenCV's by at most one level, in under 1 % of the pixels; normalization and padding are equal.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from densify.io.image import resize as cv_resize
from densify.scan.memory import level_input
from densify.scan.preprocess import level_batch, resize_grey_levels, resize_taps
from densify.scan.pyramid import levels

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PHOTOS = {"chelsea": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket()}


@pytest.mark.parametrize("factor", [0.21, 0.37, 0.5, 0.77, 1.3, 2.0])
@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_resized_grey_levels_match_opencv(name, factor):
    """Area (shrinking) and fixed-point bilinear (growing) as OpenCV computes them.

    Mutations caught: rounding half to even instead of half up (11 % of the pixels differ at
    factor 0.5), plain float bilinear instead of OpenCV's 11-bit fixed point (about 10 % at 1.3
    and 2.0), antialiased bilinear for shrinking (most pixels differ)."""
    rgb = PHOTOS[name]
    size = (round(rgb.shape[0] * factor), round(rgb.shape[1] * factor))
    want = cv_resize(rgb, size).astype(np.int16)
    got = resize_grey_levels(torch.from_numpy(rgb).permute(2, 0, 1)[None], size)
    got = got[0].permute(1, 2, 0).numpy().astype(np.int16)
    diff = np.abs(got - want)
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.01, f"{(diff > 0).mean():.2%} of the grey levels differ"


def test_an_explicit_size_with_two_factors_matches_opencv():
    rgb = PHOTOS["coffee"]  # 400 x 600 to 245 x 245: both axes shrink by different factors
    want = cv_resize(rgb, (245, 245)).astype(np.int16)
    got = resize_grey_levels(torch.from_numpy(rgb).permute(2, 0, 1)[None], (245, 245))
    diff = np.abs(got[0].permute(1, 2, 0).numpy().astype(np.int16) - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


@pytest.mark.parametrize("src,dst", [(7, 3), (10, 10 * 3 // 7), (3, 11), (100, 37), (5, 5)])
def test_taps_are_averages(src, dst):
    for mode in ("area", "linear"):
        index, weight = resize_taps(src, dst, mode)
        assert torch.allclose(weight.sum(1), torch.ones(dst), atol=1e-6)
        assert int(index.min()) >= 0 and int(index.max()) < src
        assert bool((weight >= 0).all())


@pytest.mark.parametrize("in_chans", [3, 1])
def test_level_batch_equals_the_host_level_input(in_chans):
    """Same normalization, same zero padding, same place: values differ only where a grey level
    does (one level over std). Mutation caught: padding on the wrong side (a shifted image)."""
    rgb = PHOTOS["rocket"]
    mean, std = (MEAN, STD) if in_chans == 3 else ((0.5,), (0.25,))
    for level in levels(rgb.shape[:2], (224, 224), (16, 16), scales=[0.3, 0.5, 1.0, 1.4]):
        want = level_input(rgb, level, mean, std, in_chans)
        got = level_batch(torch.from_numpy(rgb)[None], level, mean, std, in_chans)
        assert got.shape == want.shape
        assert got.is_contiguous(memory_format=torch.channels_last)
        step = 1 / 255 / min(std) + 1e-5
        diff = (got - want).abs()
        assert float(diff.max()) <= step
        # grey (in_chans 1) mixes three channels: a pixel differs where any of them does
        assert float((diff > 1e-6).float().mean()) < 0.01 * (3 if in_chans == 1 else 1)
        top, bottom, left, right = level.padding
        for band in (got[..., :top, :], got[..., got.shape[-2] - bottom:, :],
                     got[..., :, :left], got[..., :, got.shape[-1] - right:]):
            assert band.numel() == 0 or float(band.abs().max()) == 0.0


def test_level_batch_checks_its_input():
    level = levels((60, 80), (28, 28), (4, 4), scales=[0.5])[0]
    with pytest.raises(Exception, match="uint8"):
        level_batch(torch.zeros(1, 60, 80, 3), level, MEAN, STD)
    with pytest.raises(Exception, match="planned for"):
        level_batch(torch.zeros(1, 61, 80, 3, dtype=torch.uint8), level, MEAN, STD)


def test_level_constants_go_to_the_device_once_and_stay_usable_outside_a_scan(monkeypatch):
    """The taps, mean and std of a level are made (and, on a GPU, copied) once per shape: a
    second image of the same size makes none. Made during a scan (inference mode), they still
    serve a differentiable resize afterwards."""
    from densify.scan import preprocess

    preprocess.device_constants.cache_clear()
    made = []
    real = preprocess._constants
    monkeypatch.setattr(preprocess, "_constants", lambda key, device: made.append(key) or real(
        key, device))
    level = levels((60, 80), (28, 28), (4, 4), scales=[0.5, 1.5])
    images = torch.randint(0, 256, (2, 60, 80, 3), dtype=torch.uint8)
    with torch.inference_mode():
        first = [level_batch(images, lv, (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)) for lv in level]
    assert {key[0] for key in made} == {"taps", "coef", "channels"}
    count = len(made)
    with torch.inference_mode():
        again = [level_batch(images, lv, (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)) for lv in level]
    assert len(made) == count  # nothing made again
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    x = torch.rand(1, 3, 60, 80, requires_grad=True)
    preprocess.resize(x, (30, 40)).sum().backward()  # taps made in inference mode above
    assert x.grad is not None and torch.allclose(x.grad.sum(), torch.tensor(30.0 * 40 * 3))
