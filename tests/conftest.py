"""Shared test configuration: device from the environment, TF32 off, the model lists.

``DENSIFY_TEST_DEVICE`` picks the device (default ``cpu``). Per-model overrides live in one dict
(the torchvision test-suite pattern): the small canonical input each model is tested at.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from densify.models import catalogue as zoo
from densify.runtime import trim_heap as release_memory

DEVICE = torch.device(os.environ.get("DENSIFY_TEST_DEVICE", "cpu"))
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
warnings.filterwarnings("ignore", message=".*TorchScript.*")

try:
    import timm  # noqa: F401

    HAVE_TIMM = True
except ImportError:
    HAVE_TIMM = False

#: Models whose head flattens a fixed k×k map must be tested at their real canonical input.
FULL_SIZE = {"alexnet", "zfnet", "lenet5", "overfeat_fast", "overfeat_accurate"} | {
    n for n in zoo.MODELS if n.startswith("vgg")}
#: Smallest inputs giving a ≥ 2×2 final feature map (so the head pool is a real k×k pool).
SMALL_SIZE = {"inception_v3": 139, "inception_v4": 139, "googlenet": 64, "nin": 96}
#: Too large for CI (644M parameters): the huge tier only (``DENSIFY_HUGE=1``; not yet run for the
#: manual's model table, which has no row for it).
HUGE = {"regnet_y_128gf"}
#: Check 3 needs an input larger than the receptive field; for these it costs 3.6-84 TFLOP
#: (scripts/equivalence_table.py --estimate prints the figures): the huge tier.
SLOW_STRIDE_CHECK = {"resnext101_64x4d", "resnext101_32x8d", "wide_resnet101_2", "resnet152",
                     "inception_v4", "densenet169", "densenet201", "densenet161", "convnext_small",
                     "convnext_base", "convnext_large"}


#: Grouped/depthwise convolutions have no fast float64 kernel on the CPU (EfficientNet-B7 takes
#: 13 s per 64-px forward pass): these families run the float64 checks in the slow tier and the
#: float32 ones (dtype tolerance table) in the default run.
GROUPED = ("efficientnet", "mobilenet", "mnasnet", "regnet", "shufflenet", "convnext", "resnext")
#: Families with squeeze-and-excitation (global-context) layers: check 3 does not apply to them.
GLOBAL_CONTEXT = ("efficientnet", "mobilenet_v3", "regnet_y", "seresnet")


def size_for(name: str) -> tuple[int, int, int]:
    """The canonical input a model is tested at (small where the architecture allows)."""
    spec = zoo.MODELS[name]
    if name in FULL_SIZE or spec.family == "project":
        return spec.input_size
    size = SMALL_SIZE.get(name, 64)
    return (spec.input_size[0], size, size)


def model_params(names, slow=frozenset(), huge=frozenset()):
    """``pytest.param`` per model, marked for the full tier (``slow``), the huge tier, or as
    needing timm, where that applies."""
    params = []
    for name in names:
        marks = []
        if name in HUGE or name in huge:
            marks.append(pytest.mark.huge)
        elif name in slow:
            marks.append(pytest.mark.slow)
        if zoo.MODELS[name].family == "timm":
            marks.append(pytest.mark.skipif(not HAVE_TIMM, reason="needs the timm extra"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


ALL_MODELS = [n for n in zoo.MODELS if zoo.MODELS[n].family != "project"]


#: The default tier's float64 and costlier checks run on these (one per architecture family);
#: the full tier (``DENSIFY_FULL=1``) runs every model.
REPRESENTATIVE = ("lenet5", "alexnet", "zfnet", "nin", "resnet18", "squeezenet1_1",
                  "googlenet", "inception_v3", "densenet121", "mobilenet_v2", "shufflenet_v2_x0_5",
                  "mnasnet0_5", "convnext_tiny", "resnext50_32x4d", "regnet_x_400mf",
                  "efficientnet_b0", "mobilenet_v3_small", "resnetv2_50", "seresnet50")


#: Check 3 needs inputs larger than the receptive field: these representatives cost 30-90 s each
#: on the 2-core machine, so their check 3 runs in the full tier.
COSTLY_STRIDE_CHECK = ("densenet121", "convnext_tiny", "inception_v3", "zfnet")


def full_tier_unless(names, keep=REPRESENTATIVE):
    """Names outside ``keep``: marked for the full tier only."""
    return {n for n in names if n not in keep}


def dtype_params(names):
    """``(name, dtype)`` pairs. Default tier: float32 for every model (dtype tolerance table) and
    float64 for the representative subset (grouped convolutions excepted: no fast CPU float64
    kernel). Full tier: float64 for every model."""
    params = []
    slow64 = full_tier_unless(names) | {n for n in names if n.startswith(GROUPED)}
    for p in model_params(names, slow64):
        params.append(pytest.param(p.values[0], torch.float64, marks=p.marks,
                                   id=f"{p.id}-float64"))
        params.append(pytest.param(p.values[0], torch.float32, id=f"{p.id}-float32",
                                   marks=[m for m in p.marks if m.name != "slow"]))
    return params


def build(name: str, dtype=torch.float64, seed: int = 0):
    torch.manual_seed(seed)
    return zoo.build_model(name).to(device=DEVICE, dtype=dtype).eval()


_RECORD: list[dict] = []


@pytest.fixture
def record():
    """``record(model, dtype, check)``: keep a check's measured errors; with ``DENSIFY_RECORD=FILE``
    they are written there as JSON at the end of the session (the manual's model table is rendered from
    it by ``scripts/equivalence_table.py --from-record FILE``)."""

    def add(model: str, dtype: torch.dtype, check, size=None) -> None:
        _RECORD.append({"model": model, "dtype": str(dtype).replace("torch.", ""),
                        "check": check.name, "max_rel": check.max_rel, "max_abs": check.max_abs,
                        "count": check.count, "passed": check.passed, "note": check.note,
                        "size": list(size) if size else None})

    return add


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("DENSIFY_RECORD")
    if path and _RECORD:
        import json

        previous = json.loads(open(path).read()) if os.path.exists(path) else []
        with open(path, "w") as f:
            json.dump(previous + _RECORD, f, indent=1)


#: The full tier: every model in float64, every check (``.ci/run`` runs it after the default).
FULL = bool(os.environ.get("DENSIFY_FULL") or os.environ.get("DENSIFY_SLOW"))


def pytest_collection_modifyitems(config, items):
    """Default tier; ``DENSIFY_FULL=1`` adds the ``slow`` items, ``DENSIFY_HUGE=1`` everything."""
    if config.getoption("-m"):
        return
    huge = bool(os.environ.get("DENSIFY_HUGE"))
    for item in items:
        if "huge" in item.keywords and not huge:
            item.add_marker(pytest.mark.skip(reason="huge tier: run with DENSIFY_HUGE=1"))
        elif "slow" in item.keywords and not (FULL or huge):
            item.add_marker(pytest.mark.skip(reason="full tier: run with DENSIFY_FULL=1"))


@pytest.fixture(autouse=True)
def _release_memory_after_each_test():
    """Collect garbage and trim the heap after every test: a full-size float64 VGG holds ~2 GB,
    and without this the heap of one model test stays resident into the next."""
    yield
    release_memory()
