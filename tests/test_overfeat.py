"""OverFeat's two networks (Sermanet et al. 2014): sizes, strides and the 3×3 offset pooling.

The full networks (145M parameters) run checks 1-2 in float32 in tests/test_convert.py and all
float64 checks in the slow tier; here the stride logic runs in float64 on narrow copies built by
the same functions (``width``), which have exactly the same windows, strides and pooling.
"""

from __future__ import annotations

import pytest
import torch

from densify.convert import verify
from densify.convert.dense import available_strides, convolutionize
from densify.models import archs
from densify.models import catalogue as zoo
from densify.scan.pyramid import levels

#: The paper's figures (Section 3: "the fast model has about 145 million parameters, the accurate
#: one 144 million"), to 1 %.
PAPER_PARAMS = {"overfeat_fast": 145e6, "overfeat_accurate": 144e6}
#: The paper's Tables 1 and 3: canonical input and total subsampling of the feature trunk.
PAPER_GEOMETRY = {"overfeat_fast": (231, 32), "overfeat_accurate": (221, 36)}


def narrow(name: str, width: float = 1 / 32) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(archs, name)(10, width=width).double().eval()


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_counts_match_the_paper(name):
    count = sum(p.numel() for p in zoo.build_skeleton(name).parameters())
    assert abs(count - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.01
    assert zoo.get_spec(name).params == count  # the facts table is current


@pytest.mark.parametrize("name", sorted(PAPER_GEOMETRY))
def test_window_and_native_stride_are_the_papers(name):
    size, stride = PAPER_GEOMETRY[name]
    dense = convolutionize(narrow(name), (3, size, size))
    assert dense.geometry.window == (size, size) and dense.output_stride == stride
    assert dense.geometry.output_size(size + 2 * stride, size + stride) == (3, 2)
    assert zoo.get_spec(name).input_size == (3, size, size)


def test_accurate_offset_pooling_reaches_stride_12():
    """The final 3×3/3 pool at stride 1 and the head dilated by 3: 36 → 12, and only that."""
    model = narrow("overfeat_accurate")
    assert available_strides(model, (3, 221, 221)) == [36, 12]
    assert zoo.get_spec("overfeat_accurate").strides == (36, 12)
    fine = convolutionize(model, (3, 221, 221), output_stride=12)
    assert fine.output_stride == 12
    c3 = verify.check_output_stride(model, (3, 221, 221))  # default: the next reachable stride
    assert c3.passed and c3.count >= 9 and "36->12" in c3.note, c3  # all 9 3×3 offsets


def test_fast_stride_1_final_pooling_gives_16():
    model = narrow("overfeat_fast")
    assert available_strides(model, (3, 231, 231))[:2] == [32, 16]
    c3 = verify.check_output_stride(model, (3, 231, 231), 16)
    assert c3.passed and c3.count >= 4, c3


@pytest.mark.parametrize("name", sorted(PAPER_GEOMETRY))
def test_narrow_copy_converts_exactly(name):
    model = narrow(name)
    dense = convolutionize(model, (3, PAPER_GEOMETRY[name][0], PAPER_GEOMETRY[name][0]))
    for check in (verify.check_canonical(model, dense), verify.check_head(model, dense)):
        assert check.passed, check


#: The paper's Table 5: the accurate model's classifier map (all 3×3 offsets interleaved) at each
#: of its six test sizes.
PAPER_MAPS = ((3, 3), (6, 9), (9, 15), (15, 21), (18, 24), (21, 30))


def test_overfeat_preset_gives_the_papers_classifier_maps():
    """At stride 12 the dense accurate net reproduces Table 5's map sizes, on real forward passes
    (the sizes are 221 + 12k, so no padding is added)."""
    dense = convolutionize(narrow("overfeat_accurate").float(), (3, 221, 221), output_stride=12)
    cells = []
    with torch.no_grad():
        for level in levels((400, 600), dense.geometry.window, dense.geometry.stride, "overfeat"):
            assert not any(level.padding)
            out = dense(torch.zeros(1, 3, *level.input_size))
            assert tuple(out.shape[-2:]) == dense.geometry.output_size(*level.input_size)
            cells.append(tuple(out.shape[-2:]))
    assert tuple(cells) == PAPER_MAPS
