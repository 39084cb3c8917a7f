"""The catalogue's facts table (``densify/models/table.json``) against the models themselves.

``densify models`` prints the table instead of building models, so the table must say what the
models say: torchvision's bundled weights metadata (input size, normalization, classes), the
parameter count of the built model, and the strides ``convolutionize`` reaches. The default tier
computes parameters and strides for a representative subset; the full tier
(``DENSIFY_FULL=1``) for every model.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import HAVE_TIMM, model_params

from densify.cli import main
from densify.convert.dense import available_strides
from densify.models import catalogue as zoo

TABULATED = [n for n, s in zoo.MODELS.items() if s.family != "project"]
#: Computed in the default tier: one model per architecture family.
REPRESENTATIVE = {"lenet5", "zfnet", "nin", "alexnet", "vgg11", "resnet18", "squeezenet1_1",
                  "googlenet", "inception_v3", "densenet121", "mobilenet_v2", "mobilenet_v3_small",
                  "efficientnet_b0", "shufflenet_v2_x0_5", "mnasnet0_5", "regnet_x_400mf",
                  "convnext_tiny", "resnext50_32x4d", "wide_resnet50_2", "seresnet50"}


def test_table_facts_match_torchvision_metadata():
    facts = zoo.torchvision_facts()
    table = json.loads(zoo.TABLE_PATH.read_text())
    assert set(table["refused"]) == set(facts["refused"])
    tv = {n: r for n, r in table["models"].items() if r["family"] == "torchvision"}
    assert set(tv) == set(facts["models"])
    for name, row in facts["models"].items():
        for key in ("input_size", "num_classes", "mean", "std", "weights"):
            assert tv[name][key] == row[key], (name, key)


def test_seed_and_timm_facts_match_their_sources():
    table = json.loads(zoo.TABLE_PATH.read_text())["models"]
    for name, row in {**zoo.seed_facts(), **zoo.timm_facts()}.items():
        assert {k: table[name][k] for k in row} == row, name


def _full_tier_unless_representative():
    marks = {n: ("slow" if n not in REPRESENTATIVE else None) for n in TABULATED}
    return model_params(TABULATED, {n for n, m in marks.items() if m})


@pytest.mark.parametrize("name", _full_tier_unless_representative())
def test_table_params_and_strides_are_computed_from_the_model(name):
    spec = zoo.MODELS[name]
    model = zoo.build_skeleton(name)
    assert spec.params == sum(p.numel() for p in model.parameters())
    assert list(spec.strides) == available_strides(model, spec.input_size)


@pytest.mark.parametrize("name", [n for n, s in zoo.MODELS.items() if s.family == "project"])
def test_project_cards_params_and_strides_are_the_models(name):
    """The shipped models' cards carry what ``densify models`` prints for the others
    (written by scripts/train_digit_boxes.py)."""
    spec = zoo.MODELS[name]
    model = zoo.build_skeleton(name)
    assert spec.params == sum(p.numel() for p in model.parameters())
    assert list(spec.strides) == available_strides(model, spec.input_size) != []


def test_models_command_prints_the_table_and_one_card():
    result = CliRunner().invoke(main, ["models", "--json", "-"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(rows) == set(zoo.MODELS)
    assert rows["vgg19"]["params"] == 143_667_240 == zoo.MODELS["vgg19"].params
    card = CliRunner().invoke(main, ["models", "lenet5-digits", "--json", "-"])
    assert json.loads(card.output)["background_class"] == 10
    bad = CliRunner().invoke(main, ["models", "resnet5"])
    assert bad.exit_code == 1 and "did you mean resnet50" in bad.output


@pytest.mark.skipif(not HAVE_TIMM, reason="needs the timm extra")
def test_timm_rows_hold_the_computed_facts():
    assert zoo.MODELS["seresnet50"].params and zoo.MODELS["inception_v4"].strides[0] == 32
