"""The equivalence checks themselves must be able to fail: dense nets poisoned by a forward hook
(NaN outputs, a constant offset of the values, maps offset by one cell) fail checks 1-5 and
``densify verify``.

Mutations these tests catch (each tried once):
- ``compare`` back to ``max(worst, diff)`` without the non-finite rule: a NaN difference vanishes
  in Python's ``max`` and checks 1-4 pass an all-NaN net (``test_poisoned_dense_nets_fail``,
  ``test_verify_exits_1_on_a_poisoned_net``);
- ``geometry_holds`` ignoring ``finite`` (``test_geometry_verdict_needs_finite_outputs``; an
  all-NaN net also fails check 5 through its window cells, which no longer change);
- ``densify verify`` treating a padded net's crop gap as informational even when it is NaN
  (``test_verify_crops_gap_is_informational_only_while_finite``).
"""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner
from conftest import build

from densify.cli import main
from densify.convert import dense as dense_module
from densify.convert import verify
from densify.convert.selfcheck import TOLERANCE, compare

#: How each poison changes a dense net's output map ``(N, K, h, w)``.
POISONS = {
    "nan": lambda o: o * float("nan"),
    "offset": lambda o: o + 1e-4,  # lenet5's random-weight logits are ~0.1: 1e-3 relative
    # misregistered by one cell (one stride): cell j shows cell j + 1, the last one nothing
    "shift": lambda o: torch.cat([o[..., 1:], torch.zeros_like(o[..., :1])], -1),
}

#: The checks each poison must fail. Check 5 probes *which* cells change, so a constant offset
#: of the values is invisible to it by design (checks 1-4 catch it); the one-cell offset of the
#: registration fails all five.
MUST_FAIL = {"nan": {1, 2, 3, 4, 5}, "offset": {1, 2, 3, 4}, "shift": {1, 2, 3, 4, 5}}


def _poisoned(net, poison: str):
    net.register_forward_hook(lambda module, args, out: POISONS[poison](out))
    return net


@pytest.fixture
def poison_conversions(monkeypatch):
    """``poison(kind)``: every later conversion returns a poisoned dense net, except check 3's
    native-stride reference (check 3 compares two conversions: poisoning both alike cancels)."""
    convert = dense_module.convolutionize

    def poison(kind: str) -> None:
        def poisoned(model, input_size=None, *args, **kwargs):
            net = convert(model, input_size, *args, **kwargs)
            reference = not args and set(kwargs) <= {"output_stride"} and \
                kwargs.get("output_stride") is None
            return net if reference else _poisoned(net, kind)

        monkeypatch.setattr(dense_module, "convolutionize", poisoned)
        monkeypatch.setattr(verify, "convolutionize", poisoned)

    return poison


def _verdicts(model, dense) -> dict[int, bool]:
    return {1: verify.check_canonical(model, dense).passed,
            2: verify.check_head(model, dense).passed,
            3: verify.check_output_stride(model, (1, 28, 28)).passed,
            4: verify.check_crops(model, dense).passed,
            5: verify.geometry_holds(verify.probe_geometry(dense))}


def test_clean_lenet_passes_every_check():
    """The control for the poisoned runs below: the same checks on the unpoisoned net pass."""
    model = build("lenet5")
    dense = dense_module.convolutionize(model, (1, 28, 28), head="fast")
    assert _verdicts(model, dense) == {1: True, 2: True, 3: True, 4: True, 5: True}


@pytest.mark.parametrize("poison", list(POISONS))
def test_poisoned_dense_nets_fail(poison, poison_conversions):
    """A NaN-, offset- or shift-poisoned LeNet-5 (float64) fails the checks in ``MUST_FAIL``;
    NaN reaches every check as a worst error of ``inf``."""
    model = build("lenet5")
    poison_conversions(poison)
    dense = dense_module.convolutionize(model, (1, 28, 28), head="fast")
    verdicts = _verdicts(model, dense)
    assert {k for k, ok in verdicts.items() if not ok} == MUST_FAIL[poison], verdicts
    if poison == "nan":
        for check in (verify.check_canonical(model, dense), verify.check_head(model, dense),
                      verify.check_crops(model, dense)):
            assert check.max_rel == check.max_abs == math.inf, check


def test_geometry_verdict_needs_finite_outputs():
    """Check 5's verdict: right cells, finite outputs, and at least one window cell probed."""
    probes = verify.probe_geometry(dense_module.convolutionize(build("lenet5"), (1, 28, 28)))
    assert verify.geometry_holds(probes)
    assert not verify.geometry_holds([{**probes[0], "finite": False}, *probes[1:]])
    nowhere = {**probes[0], "in_window": torch.zeros_like(probes[0]["in_window"])}
    assert not verify.geometry_holds([nowhere])
    edge = next(p for p in probes if not p["in_field"].all())  # a pixel near the border
    assert not verify.geometry_holds([{**edge, "changed": edge["changed"] | ~edge["in_field"]}])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_compare_treats_non_finite_values_as_failures(value):
    """NaN or inf on either side, or in the scale, is a failure with worst errors ``inf``."""
    good = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    bad = good.clone()
    bad[1, 0] = value
    for expected, actual in ((good, bad), (bad, good), (bad, bad)):
        check = compare("c", expected, actual)
        assert not check.passed and check.max_rel == check.max_abs == math.inf, check
    assert compare("c", good, good + 1e-12).passed  # the control: within 1e-9


def test_compare_reports_the_worst_output_of_several():
    a = [torch.ones(3, 2, dtype=torch.float64), torch.ones(3, 4, dtype=torch.float64)]
    b = [a[0], a[1].clone()]
    b[1][2, 3] += 1e-6
    check = compare("two", a, b)
    assert check.max_rel == pytest.approx(1e-6) and not check.passed
    assert check.tolerance == TOLERANCE[torch.float64] and check.count == 3


@pytest.mark.parametrize("poison", list(POISONS))
def test_verify_exits_1_on_a_poisoned_net(poison, poison_conversions):
    """``densify verify --crops`` runs checks 1-4: each poison fails one, so the exit is 1, the
    failing checks say FAIL, and a NaN net's worst error is printed as inf."""
    poison_conversions(poison)
    result = CliRunner().invoke(main, ["verify", "-m", "lenet5", "-w", "random", "--crops"])
    assert result.exit_code == 1, result.output
    status = {line.split()[0]: line.split()[1] for line in result.output.splitlines()[1:]}
    expected = {name for name, n in (("canonical", 1), ("head", 2), ("output_stride", 3),
                                     ("crops", 4)) if n in MUST_FAIL[poison]}
    assert {k for k, v in status.items() if v == "FAIL"} == expected, result.output
    if poison == "nan":
        assert "max_rel       inf" in result.output


def test_verify_crops_gap_is_informational_only_while_finite(monkeypatch):
    """A padded net's crop gap (check 4) does not fail ``verify``; a non-finite one does."""
    args = ["verify", "-m", "nin", "-w", "random", "--input-size", "96", "--crops",
            "--dtype", "float32"]
    monkeypatch.setattr(verify, "check_canonical", lambda m, d: verify.Check(
        "canonical", 0.0, 0.0, 1e-4, 1))
    monkeypatch.setattr(verify, "check_head", lambda m, d: verify.Check("head", 0.0, 0.0, 1e-4, 1))
    monkeypatch.setattr(verify, "check_output_stride", lambda m, s, o: verify.Check(
        "output_stride", 0.0, 0.0, 1e-4, 1))
    gap = verify.Check("crops", 0.5, 0.5, 1e-4, 9)
    monkeypatch.setattr(verify, "check_crops", lambda m, d: gap)
    assert CliRunner().invoke(main, args).exit_code == 0
    gap = verify.Check("crops", math.inf, math.inf, 1e-4, 9)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "FAIL" in result.output, result.output


def test_tolerance_table_is_pinned():
    """The dtype → tolerance table (relative to the largest |logit|) the manual states, and each
    entry decides a pass: an error of half the tolerance passes, twice the tolerance fails.
    Mutation caught: any entry loosened or tightened (e.g. float64 1e-9 → 1e-6)."""
    assert TOLERANCE == {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 5e-2,
                         torch.float16: 1e-2}
    for dtype, tol in TOLERANCE.items():
        expected = torch.tensor([[4.0, -2.0]], dtype=dtype)
        for factor, passes in ((0.5, True), (2.0, False)):
            actual = expected.double().clone()
            actual[0, 1] += factor * tol * 4.0
            check = compare("c", expected.double(), actual.to(dtype))
            assert check.passed is passes, (dtype, factor, check)
