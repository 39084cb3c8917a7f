"""The scales: default range, explicit factors, validation, rounding and padding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from densify.errors import ParameterError
from densify.io.image import resize
from densify.scan.pyramid import (
    MAX_LEVEL_PIXELS,
    OVERFEAT_SIZES,
    PRESETS,
    default_range,
    geometric_factors,
    levels,
    parse_scales,
    resized_size,
    scale_factors,
)


def test_default_range_short_side_equals_window_up_to_native():
    lo, hi = default_range((1200, 1600), (28, 28))
    assert lo == pytest.approx(28 / 1200) and hi == 1.0
    assert round(1200 * lo) == 28


def test_default_range_small_image_spans_two_windows():
    """OverFeat-like span for images under twice the window: short side window -> 2 x window."""
    lo, hi = default_range((245, 300), (224, 224))
    assert lo == pytest.approx(224 / 245) and hi == pytest.approx(2 * 224 / 245)


def test_default_range_non_square_window_fits_both_axes():
    lo, _ = default_range((100, 1000), (20, 400))
    assert lo == pytest.approx(0.4)  # the width decides: 1000 * 0.4 = 400


def test_geometric_factors_constant_ratio():
    factors = geometric_factors(6, 0.25, 1.0)
    ratios = np.diff(np.log(factors))
    assert len(factors) == 6 and factors[0] == pytest.approx(0.25) and factors[-1] == 1.0
    assert np.allclose(ratios, ratios[0])


def test_one_scale_is_the_top():
    assert geometric_factors(1, 0.2, 1.0) == (1.0,)


@pytest.mark.parametrize("value, expected", [
    (3, 3), ("6", 6), ("0.5,1,2", (0.5, 1.0, 2.0)), ([0.5, 1], (0.5, 1.0)), (0.75, (0.75,)),
    (" 1 , 2 ", (1.0, 2.0)),
])
def test_parse_scales(value, expected):
    assert parse_scales(value) == expected


def test_parse_scales_range():
    factors = parse_scales("0.25:1:3")
    assert factors == pytest.approx((0.25, 0.5, 1.0))


@pytest.mark.parametrize("value, words", [
    (0, "positive integer"), ("0", "positive integer"), (-2, "positive integer"),
    ("0.5,0", "positive and finite"), ("-1", "positive and finite"), ([1.0, -0.5], "positive"),
    ("nan", "positive and finite"), ("inf", "positive and finite"), ("abc", "cannot read"),
    ("1:2", "cannot read"), ([], "no scale factors"), (True, "count or a list"),
])
def test_parse_scales_rejects_with_one_line_fix(value, words):
    with pytest.raises(ValueError, match=words) as info:
        parse_scales(value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("size, factor, expected", [
    ((100, 100), 0.5, (50, 50)),
    ((101, 99), 0.5, (51, 50)),  # 50.5 rounds up (Python's round would give 50), 49.5 -> 50
    ((3, 3), 0.1, (1, 1)),  # never below one pixel
    ((480, 640), 1.0, (480, 640)),
    ((7, 9), 1 / 3, (2, 3)),
])
def test_resized_size_rounds_half_up(size, factor, expected):
    assert resized_size(size, factor) == expected


def test_opencv_resize_gives_the_documented_size():
    image = np.zeros((101, 99, 3), np.uint8)
    for factor in (0.5, 0.37, 1.7):
        size = resized_size(image.shape[:2], factor)
        assert resize(image, size).shape[:2] == size == (
            math.floor(101 * factor + 0.5), math.floor(99 * factor + 0.5))


def test_resized_size_refuses_huge_levels():
    with pytest.raises(ValueError, match="smaller factors"):
        resized_size((10_000, 10_000), math.sqrt(MAX_LEVEL_PIXELS) / 10_000 * 1.01)


def test_levels_pad_to_the_stride_grid_centred():
    (level,) = levels((100, 61), (28, 28), (4, 4), [1.0])
    assert level.size == (100, 61)
    height, width = level.input_size
    assert (height - 28) % 4 == 0 and (width - 28) % 4 == 0
    assert 0 <= height - 100 < 4 and 0 <= width - 61 < 4
    top, bottom, left, right = level.padding
    assert abs(top - bottom) <= 1 and abs(left - right) <= 1
    assert not level.padded_to_window and not level.upscaled


def test_levels_pad_small_images_up_to_the_window():
    (level,) = levels((10, 40), (28, 28), (4, 4), [1.0])
    assert level.padded_to_window
    assert level.input_size == (28, 40)
    assert level.padding[:2] == (9, 9)


def test_default_levels_upscale_small_images_instead_of_padding():
    pyramid = levels((14, 20), (28, 28), (4, 4), 3)
    assert [lv.size[0] for lv in pyramid] == [28, 40, 56]
    assert all(lv.upscaled and not lv.padded_to_window for lv in pyramid)


def test_realized_scale_is_size_over_image():
    (level,) = levels((101, 99), (28, 28), (4, 4), [0.5])
    assert level.scale == (51 / 101, 50 / 99)


def test_scale_factors_count_vs_list():
    assert scale_factors((400, 600), (224, 224), 2) == pytest.approx((0.56, 1.12))
    assert scale_factors((400, 600), (224, 224), "0.5,2") == (0.5, 2.0)


def test_object_range_maps_wanted_sizes_onto_the_trained_height():
    from densify.scan.pyramid import object_range

    lo, hi = object_range(20.0, (24, 120))
    assert (lo, hi) == (20 / 120, 20 / 24)
    factors = scale_factors((1200, 1600), (28, 28), 6, (lo, hi))
    assert factors[0] == pytest.approx(lo) and factors[-1] == pytest.approx(hi)
    # each scale maps some object size between 24 and 120 px onto 20 px
    assert all(24 <= 20 / f <= 120 for f in factors)
    for bad in [(0, 10), (50, 20)]:
        with pytest.raises(ValueError, match="24:120"):
            object_range(20.0, bad)


def test_cli_rejects_bad_object_sizes():
    from click.testing import CliRunner

    from densify.cli import main

    result = CliRunner().invoke(main, ["heatmap", "x.png", "-m", "lenet5", "--object-sizes", "9"])
    assert result.exit_code == 2 and "MIN:MAX" in result.output


def test_parse_sizes_and_the_overfeat_preset():
    assert parse_scales("245x245, 281X317") == ((245, 245), (281, 317))
    assert parse_scales([(245, 245), [281, 317]]) == ((245, 245), (281, 317))
    assert parse_scales("overfeat") == OVERFEAT_SIZES == PRESETS["overfeat"]
    assert len(OVERFEAT_SIZES) == 6 and OVERFEAT_SIZES[-1] == (461, 569)


@pytest.mark.parametrize("value, words", [("245x", "cannot read"), ("0x245", "positive"),
                                          ("overfeet", "preset"), ([(1, 2, 3)], "two positive")])
def test_parse_sizes_rejects_with_one_line_fix(value, words):
    with pytest.raises(ParameterError, match=words) as info:
        parse_scales(value)
    assert "\n" not in str(info.value)


def test_explicit_sizes_resize_exactly_with_per_axis_factors():
    lv = levels((400, 600), (221, 221), (12, 12), "245x245,281x317")
    assert [lev.size for lev in lv] == [(245, 245), (281, 317)]
    assert lv[1].scale == (281 / 400, 317 / 600)
    assert lv[1].factor == pytest.approx(math.sqrt(281 / 400 * 317 / 600))
    assert scale_factors((400, 600), (221, 221), "245x245") == (pytest.approx(
        math.sqrt(245 / 400 * 245 / 600)),)
    # Padding to the stride grid applies per axis as for factors: 317 = 221 + 8*12, 389 = 221+14*12.
    assert levels((400, 600), (221, 221), (12, 12), [(317, 389)])[0].padding == (0, 0, 0, 0)
    assert levels((400, 600), (221, 221), (12, 12), [(318, 389)])[0].padding == (5, 6, 0, 0)


def test_explicit_sizes_refuse_huge_levels():
    with pytest.raises(ParameterError, match="smaller sizes"):
        levels((10, 10), (8, 8), (4, 4), [(9000, 9000)])
