"""Every timm family with a CNN trunk converts exactly, flags its global context, or is refused in
one line: never a crash, never a wrong net (tests/timm_sweep.py has the list and the checks).

The default tier runs one small variant of the common families (about 2-3 minutes on two CPU
cores); ``DENSIFY_FULL=1`` adds the larger and slower ones (:data:`timm_sweep.SLOW`).
``python scripts/timm_table.py`` prints the outcome table of docs/timm.md.
"""

from __future__ import annotations

import pytest
from conftest import HAVE_TIMM
from timm_sweep import DEFAULT, SLOW, sweep_one

PARAMS = [pytest.param(n, *DEFAULT[n], id=n) for n in DEFAULT] + [
    pytest.param(n, *SLOW[n], id=n, marks=pytest.mark.slow) for n in SLOW]


@pytest.mark.skipif(not HAVE_TIMM, reason="needs the timm extra")
@pytest.mark.parametrize("name, size, dtype, kind", PARAMS)
def test_timm_family(name, size, dtype, kind):
    """Check 1 and check 2 against timm's own ``forward_features``/``forward_head`` split and a
    locality probe on an input taller than the receptive field (tests/timm_sweep.py).

    Mutations caught: GroupNorm not recognised as a statistic (``resnetv2_50x1_bit`` and
    ``poolformer_s12`` come out ``exact`` with a finite field, and their probe moves row 0:
    ``wrong``); the fast path not following ``conv_head``'s channels without the fallback
    (``mobilenetv3_small_050`` refused); ECA's pooled vector indexed as a map (a crash)."""
    outcome = sweep_one(name, size, dtype)
    assert outcome.kind == kind, outcome
    if kind == "refused":
        assert "\n" not in outcome.message and len(outcome.message) < 400
