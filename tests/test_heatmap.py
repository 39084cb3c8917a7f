"""Heat maps: registration to the original image at every scale and stride, and the rules."""

from __future__ import annotations

import pytest
import torch
from squares import CATEGORIES, WINDOW, square_detector, square_image

from densify.convert.geometry import Geometry
from densify.scan.heatmap import centre_weights, heatmaps, image_scores, peak, scale_heatmap
from densify.scan.pyramid import levels
from densify.scan.result import ScaleMap
from densify.scan.scanner import Scanner

FACTORS = (0.75, 1.0, 1.5)
CENTRES = ((61, 87), (100, 143))  # square centres (y, x) in a 160 x 200 image


@pytest.fixture(scope="module", params=[16, 8], ids=["stride16", "stride8"])
def scanner(request):
    return Scanner(square_detector(), scales=FACTORS, output_stride=request.param, device="cpu",
                   input_size=(WINDOW, WINDOW), mean=(0, 0, 0), std=(1, 1, 1),
                   categories=CATEGORIES, background_class=0)


def _argmax_yx(heat: torch.Tensor) -> tuple[float, float]:
    y, x = divmod(int(heat.argmax()), heat.shape[-1])
    return y + 0.5, x + 0.5  # pixel centre


@pytest.mark.parametrize("centre", CENTRES)
def test_peak_lands_on_the_square_at_every_scale(scanner, centre):
    result = scanner(square_image(160, 200, centre))
    assert result.factors == FACTORS
    for m in result.maps:
        fy, fx = m.level.scale
        y, x = _argmax_yx(scale_heatmap(m, [1])[0])
        # Half a stride, in original pixels, plus one pixel for the argmax pixel's own size.
        assert abs(y - centre[0]) <= scanner.output_stride / (2 * fy) + 1, (m.factor, y)
        assert abs(x - centre[1]) <= scanner.output_stride / (2 * fx) + 1, (m.factor, x)


@pytest.mark.parametrize("centre", CENTRES)
def test_aggregated_peak_and_top_class_box(scanner, centre):
    result = scanner(square_image(160, 200, centre))
    y, x = _argmax_yx(torch.from_numpy(result.heatmap("square")))
    tol = scanner.output_stride / (2 * min(FACTORS)) + 1
    assert abs(y - centre[0]) <= tol and abs(x - centre[1]) <= tol
    best = result.top_classes(1)[0]
    assert best.name == "square" and best.index == 1
    x1, y1, x2, y2 = best.box
    assert abs((x1 + x2) / 2 - centre[1]) <= tol and abs((y1 + y2) / 2 - centre[0]) <= tol


def test_heatmap_is_registered_to_the_image_size(scanner):
    result = scanner(square_image(160, 200, CENTRES[0]))
    heat = result.heatmap(1)
    assert heat.shape == (160, 200) and heat.dtype.name == "float32"
    assert 0 <= heat.min() and heat.max() <= 1


def test_scale_heatmap_hits_cell_values_at_window_centres():
    """Under each window centre the map equals that cell's probability; between, it blends."""
    geometry = Geometry(window=(9, 9), stride=(4, 4))  # odd window: centres on pixel centres
    (level,) = levels((25, 33), (9, 9), (4, 4), [1.0])
    assert level.padding == (0, 0, 0, 0)
    h, w = geometry.output_size(25, 33)
    probs = torch.rand(3, h, w).softmax(0)
    heat = scale_heatmap(ScaleMap(level, geometry, probs), [0, 2])
    centres = heat[:, 4:4 * h + 1:4, 4:4 * w + 1:4]  # pixel 4 + 4j: centre 4.5 + 4j
    assert torch.allclose(centres, probs[[0, 2]], atol=1e-6)
    midway = heat[:, 4, 6]  # pixel centre 6.5: halfway between cells 0 and 1
    assert torch.allclose(midway, probs[[0, 2], 0, :2].mean(1), atol=1e-6)
    assert torch.allclose(heat[:, :4, :4], probs[[0, 2], :1, :1].expand(2, 4, 4))  # clamped


def test_centre_weights_rows_sum_to_one_and_clamp():
    weights = centre_weights(pixels=50, cells=5, scale=1.0, pad=0, offset=0, window=10, stride=8)
    assert torch.allclose(weights.sum(1), torch.ones(50))
    assert weights[0, 0] == 1 and weights[-1, -1] == 1  # beyond the outer centres: nearest
    # Pixel 12 (centre 12.5) lies between window centres 5 and 13.
    row = weights[12]
    assert row[1] == pytest.approx((12.5 - 5) / 8) and row[0] == pytest.approx(1 - (12.5 - 5) / 8)


def test_heatmaps_average_over_scales():
    geometry = Geometry(window=(8, 8), stride=(4, 4))
    maps = []
    for value in (0.2, 0.6):
        (level,) = levels((16, 16), (8, 8), (4, 4), [1.0])
        h, w = geometry.output_size(*level.input_size)
        probs = torch.stack([torch.full((h, w), value), torch.full((h, w), 1 - value)])
        maps.append(ScaleMap(level, geometry, probs))
    heat = heatmaps(maps, [0], (16, 16))
    assert torch.allclose(heat, torch.full((1, 16, 16), 0.4))


def test_image_scores_follow_overfeat():
    """Spatial max per class per scale, then the mean over scales."""
    geometry = Geometry(window=(8, 8), stride=(4, 4))
    (level,) = levels((12, 12), (8, 8), (4, 4), [1.0])
    a = torch.tensor([[[0.9, 0.1], [0.2, 0.3]], [[0.1, 0.9], [0.8, 0.7]]])
    b = torch.tensor([[[0.5, 0.5], [0.4, 0.5]], [[0.5, 0.5], [0.6, 0.5]]])
    maps = [ScaleMap(level, geometry, a), ScaleMap(level, geometry, b)]
    assert torch.allclose(image_scores(maps), torch.tensor([0.7, 0.75]))
    assert peak(maps, 0) == (0, 0, pytest.approx(0.9))
    assert peak(maps, 1)[:2] == (0, 1)


def test_explicit_sizes_register_back_with_separate_axis_factors():
    """Squeezed to 120 rows and stretched to 300 columns (fy 0.75, fx 1.5), the square is still
    found where it is in the original image: boxes and maps use each axis's own factor."""
    scanner = Scanner(square_detector(), scales="120x300,200x150", output_stride=8, device="cpu",
                      input_size=(WINDOW, WINDOW), mean=(0, 0, 0), std=(1, 1, 1),
                      categories=CATEGORIES, background_class=0)
    centre = CENTRES[0]
    result = scanner(square_image(160, 200, centre))
    assert [m.size for m in result.maps] == [(120, 300), (200, 150)]
    for m in result.maps:
        fy, fx = m.level.scale
        y, x = _argmax_yx(scale_heatmap(m, [1])[0])
        assert abs(y - centre[0]) <= 8 / (2 * fy) + 1 and abs(x - centre[1]) <= 8 / (2 * fx) + 1
        cell = int(m.probs[1].flatten().argmax())
        x1, y1, x2, y2 = m.boxes(clip=False)[cell].tolist()
        assert (x2 - x1, y2 - y1) == pytest.approx((WINDOW / fx, WINDOW / fy))
        assert abs((x1 + x2) / 2 - centre[1]) <= 8 / (2 * fx) + 1
        assert abs((y1 + y2) / 2 - centre[0]) <= 8 / (2 * fy) + 1
