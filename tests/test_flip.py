"""OverFeat's horizontal flips: mirrored scans registered back onto the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from squares import CATEGORIES, WINDOW, square_detector, square_image

from densify.scan.heatmap import scale_heatmap
from densify.scan.scanner import Scanner

# 203 px wide: at factor 1 and stride 8 the padding is 2 px left, 3 px right (asymmetric), so a
# mirrored window grid does not coincide with the original one.
HEIGHT, WIDTH = 150, 203


def _scanner(flip: bool, model=None, **kw) -> Scanner:
    return Scanner(model or square_detector(), scales=(0.8, 1.0), output_stride=8, device="cpu",
                   input_size=(WINDOW, WINDOW), mean=(0, 0, 0), std=(1, 1, 1),
                   categories=CATEGORIES, background_class=0, flip=flip, **kw)


def _random_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 4, 3, stride=2), torch.nn.ReLU(),
                               torch.nn.Flatten(1), torch.nn.Linear(4 * 3 * 3, 2)).eval()


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def test_flip_doubles_the_maps_and_marks_them(photo):
    result = _scanner(True, _random_net())(photo)
    assert [m.flipped for m in result.maps] == [False, True, False, True]
    assert [m.factor for m in result.maps] == [0.8, 0.8, 1.0, 1.0]
    assert not any(m.flipped for m in _scanner(False, _random_net())(photo).maps)


def test_flip_averaged_heatmap_of_a_mirrored_image_is_the_mirror(photo):
    """A net that is not mirror-symmetric (random weights) still gives, with flips, a heat map of
    the mirrored image that is exactly the mirror of the original's, and the same scores."""
    scanner = _scanner(True, _random_net())
    original, mirrored = scanner(photo), scanner(np.ascontiguousarray(photo[:, ::-1]))
    heat, heat_m = original.heatmaps([0, 1]), mirrored.heatmaps([0, 1])
    torch.testing.assert_close(heat_m, heat.flip(-1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(mirrored.scores(), original.scores(), rtol=1e-6, atol=1e-7)
    # Without flips the property fails for this net: the test can tell.
    plain = _scanner(False, _random_net())
    assert not torch.allclose(plain(photo[:, ::-1].copy()).heatmaps([1]),
                              plain(photo).heatmaps([1]).flip(-1), atol=1e-3)


def test_image_scores_average_max_over_scales_and_flips(photo):
    result = _scanner(True, _random_net())(photo)
    maxima = torch.stack([m.probs.flatten(1).amax(1) for m in result.maps])
    assert maxima.shape[0] == 4
    torch.testing.assert_close(result.scores(), maxima.mean(0))


@pytest.mark.parametrize("centre", [(60, 47), (90, 150)])
def test_mirrored_maps_register_back_onto_the_square(centre):
    """Each mirrored map, on its own, peaks at the square's place in the ORIGINAL image: the
    best cell's window (a mirrored window starting at W - window - x) and the painted map."""
    result = _scanner(True)(square_image(HEIGHT, WIDTH, centre))
    for m in (m for m in result.maps if m.flipped):
        fy, fx = m.level.scale
        tol_x, tol_y = 8 / (2 * fx) + 1, 8 / (2 * fy) + 1
        cell = int(m.probs[1].flatten().argmax())
        x1, y1, x2, y2 = m.boxes(clip=False)[cell].tolist()
        assert abs((x1 + x2) / 2 - centre[1]) <= tol_x and abs((y1 + y2) / 2 - centre[0]) <= tol_y
        heat = scale_heatmap(m, [1])[0]
        y, x = divmod(int(heat.argmax()), heat.shape[-1])
        assert abs(x + 0.5 - centre[1]) <= tol_x and abs(y + 0.5 - centre[0]) <= tol_y
    best = result.top_classes(1)[0]
    assert best.name == "square"
