from pathlib import Path

import pytest
import yaml

from edgepipe.errors import RecipeError
from edgepipe.recipe import load_recipe, parse_recipe

REPO = Path(__file__).resolve().parents[1]
BASE = {"name": "r", "data": {"dataset": "fashion-mnist"}}


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_validate(path):
    assert load_recipe(path).name


def test_load_recipe_rejects_unknown_key_with_suggestion():
    with pytest.raises(RecipeError, match=r"qat\.epoch: unknown key; did you mean 'epochs'\?"):
        parse_recipe({**BASE, "qat": {"epoch": 3}})


def test_load_recipe_rejects_out_of_range_value_naming_its_path():
    with pytest.raises(RecipeError, match=r"qat\.epochs: must be >= 0 \(got -1\)"):
        parse_recipe({**BASE, "qat": {"epochs": -1}})


def test_load_recipe_rejects_wrong_type():
    with pytest.raises(RecipeError, match=r"finetune\.lr"):
        parse_recipe({**BASE, "finetune": {"lr": "fast"}})


def test_load_recipe_rejects_a_stage_listed_twice():
    with pytest.raises(RecipeError, match="stages lists a stage twice"):
        parse_recipe({**BASE, "stages": ["finetune", "finetune"]})


def test_data_needs_exactly_one_source():
    with pytest.raises(RecipeError, match="exactly one of data.dataset"):
        parse_recipe({"name": "r", "data": {"dataset": "fashion-mnist", "root": "/x"}})


def test_invalid_yaml_and_missing_file_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML") as exc:
        load_recipe(bad)
    assert "\n" not in str(exc.value)
    with pytest.raises(RecipeError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_recipe_round_trips_from_yaml(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({**BASE, "qat": {"epochs": 0}}))
    r = load_recipe(p)
    assert r.qat.epochs == 0 and r.data.image_size == 224
