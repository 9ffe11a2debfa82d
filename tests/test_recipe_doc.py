"""docs/recipe_keys.md is generated from the recipe models (edgepipe/recipe_doc.py): the committed page is the
generator's output, every key has a meaning and an example the key accepts."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel, ValidationError

from edgepipe import recipe as r
from edgepipe import recipe_doc


def _sections() -> list[tuple[str, type[BaseModel]]]:
    """Every model a recipe is made of, with its dotted path, nested optional sections included."""
    out, todo = [], [("", r.Recipe)]
    while todo:
        path, model = todo.pop()
        out.append((path, model))
        for key, field in model.model_fields.items():
            for sub in (field.annotation, *typing.get_args(field.annotation)):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    todo.append((f"{path}.{key}".lstrip("."), sub))
    return out


def test_committed_recipe_keys_page_is_what_the_models_generate():
    assert recipe_doc.PAGE.read_text() == recipe_doc.render(), (
        "docs/recipe_keys.md is stale; fix: make docs (python -m edgepipe.recipe_doc)"
    )


def test_page_lists_every_recipe_key_once_per_section():
    page = recipe_doc.render()
    for path, model in _sections():
        for key in recipe_doc.table_keys(model):
            assert f"| `{key}` |" in page, f"{path}.{key}"
    assert "| `mobilenet_v3_large`, `mobilenet_v3_small` | every stage |" in page


@pytest.mark.parametrize("path, model", _sections(), ids=[p or "recipe" for p, _ in _sections()])
def test_every_key_has_a_meaning_and_an_example_the_key_accepts(path, model):
    for key in recipe_doc.table_keys(model):
        field = model.model_fields[key]
        assert field.description and field.examples, f"{path}.{key}: give Field(description=, examples=)"
        try:
            model.model_validate({key: field.examples[0]})
        except ValidationError as exc:
            # other keys' errors (a required key left out, an option whose selector is not set) are not
            # this example's: only an error at the key itself is
            mine = [e for e in exc.errors() if e["loc"][:1] == (key,)]
            assert not mine, f"{path}.{key}: example {field.examples[0]!r} is refused: {mine}"


def test_type_texts_that_validators_set_name_the_current_choices():
    from edgepipe import stages
    from edgepipe.constants import TARGET_NAMES

    doc_type = r.Recipe.model_fields["stages"].json_schema_extra["doc_type"]
    assert doc_type == f"list of `{' '.join(stages.listable())}`, or null"
    assert " ".join(TARGET_NAMES) in r.Recipe.model_fields["targets"].json_schema_extra["doc_type"]


def test_check_fails_on_a_stale_page_and_passes_once_written(tmp_path, capsys):
    page = tmp_path / "recipe_keys.md"
    page.write_text("## Recipe keys\n\nhand-edited\n")
    assert recipe_doc.main(["--check", str(page)]) == 1
    assert "stale; fix: make docs" in capsys.readouterr().err
    assert recipe_doc.main([str(page)]) == 0 and recipe_doc.main(["--check", str(page)]) == 0


def test_type_text_reads_bounds_choices_and_null_from_the_field():
    fields = r.DataConfig.model_fields
    assert recipe_doc.type_text(fields["crop_pct"].annotation, fields["crop_pct"]) == "(0, 1]"
    assert recipe_doc.type_text(fields["batch_size"].annotation, fields["batch_size"]) == "1..4096"
    limit = fields["limit_per_class"]
    assert recipe_doc.type_text(limit.annotation, limit) == "int >= 1 or null"
    attention = r.ModelConfig.model_fields["attention"]
    assert recipe_doc.type_text(attention.annotation, attention) == "`se`, `eca`, `cbam`, `none`, or null"
