from __future__ import annotations

from pathlib import Path

import pytest

from astra_tune.errors import ConfigError
from astra_tune.models.catalog import DEFAULT_MODEL
from astra_tune.recipe import Recipe, describe_fields, load_recipe


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    return [str(p) for p in info.value.problems]


def test_minimal_recipe_takes_defaults(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, "name: support-bot\n"))
    assert recipe == Recipe(name="support-bot", base_model=DEFAULT_MODEL, seed=42)


def test_misspelled_key_names_the_line_and_the_closest_key(tmp_path: Path) -> None:
    path = write(tmp_path, "name: demo\nbase_modle: smollm2-135m-instruct\n")
    assert problems_of(path) == [f"{path}:2: base_modle: unknown key — did you mean base_model?"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "name: 'bad name!'\nseed: -1\nsede: 3\n")
    problems = problems_of(path)
    assert len(problems) == 3
    assert problems[0].startswith(f"{path}:1: name: String should match pattern")
    assert problems[1].startswith(f"{path}:2: seed: Input should be greater than or equal to 0")
    assert problems[2] == f"{path}:3: sede: unknown key — did you mean seed?"


def test_unrelated_unknown_key_lists_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "name: demo\nzzz: 1\n")
    assert problems_of(path) == [
        f"{path}:2: zzz: unknown key (valid keys here: name, base_model, seed, data, train, "
        "eval, export, registry)"
    ]


def test_missing_name_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\n")
    assert problems_of(path) == [f"{path}: name: required field is missing"]


def test_unknown_base_model_suggests_a_catalog_name(tmp_path: Path) -> None:
    path = write(tmp_path, "name: demo\nbase_model: smollm2-135m-instruc\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:2: base_model: unknown model")
    assert "did you mean 'smollm2-135m-instruct'?" in problem


def test_relative_model_path_is_resolved_against_the_recipe(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "config.json").write_text("{}")
    recipe_dir = tmp_path
    recipe = load_recipe(write(recipe_dir, "name: demo\nbase_model: weights\n"))
    assert recipe.base_model == str((tmp_path / "weights").resolve())


def test_yaml_syntax_error_points_at_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: demo\nseed: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_recipe(path)
    assert info.value.where is not None
    assert info.value.where.startswith(f"{path}:")
    assert "not valid YAML" in info.value.what


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_recipe(write(tmp_path, "- name: demo\n"))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffname: demo\n".encode())
    assert load_recipe(path).name == "demo"


def test_every_field_is_described() -> None:
    rows = {row.path: row for row in describe_fields()}
    assert {"name", "base_model", "seed", "data.system_prompt", "data.dedup.near_threshold"} <= set(
        rows
    )
    assert all(row.description for row in rows.values())
    assert rows["name"].default == "(required)"
    assert rows["base_model"].default == DEFAULT_MODEL
    assert rows["seed"].default == "42"


def test_nested_misspelling_names_the_full_path(tmp_path: Path) -> None:
    path = write(tmp_path, "name: demo\ndata:\n  dedup:\n    near_treshold: 0.9\n")
    assert problems_of(path) == [
        f"{path}:4: data.dedup.near_treshold: unknown key — did you mean data.dedup.near_threshold?"
    ]


def test_data_sources_accept_plain_paths(tmp_path: Path) -> None:
    recipe = load_recipe(
        write(tmp_path, "name: demo\ndata:\n  sources: [a.jsonl, {path: b.csv, format: alpaca}]\n")
    )
    assert [(s.path, s.format) for s in recipe.data.sources] == [
        (str(tmp_path.resolve() / "a.jsonl"), "auto"),
        (str(tmp_path.resolve() / "b.csv"), "alpaca"),
    ]


def test_every_relative_path_means_next_to_the_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same names exist in the working directory: they must not be picked up.
    for where in (tmp_path, tmp_path / "sub"):
        (where / "docs").mkdir(parents=True)
        (where / "team").mkdir()
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(
        write(
            tmp_path / "sub",
            "name: demo\ndata:\n  sources: [docs/, {path: team/faq.jsonl}, builtin:orrery,"
            " HuggingFaceH4/no_robots, /abs/x.jsonl]\n"
            "train: {output_dir: run, data_dir: prepared}\nexport: {output_dir: out}\n",
        )
    )
    sub = (tmp_path / "sub").resolve()
    assert [s.path for s in recipe.data.sources] == [
        str(sub / "docs"),
        str(sub / "team/faq.jsonl"),
        "builtin:orrery",
        "HuggingFaceH4/no_robots",
        "/abs/x.jsonl",
    ]
    assert (recipe.train.output_dir, recipe.train.data_dir, recipe.export.output_dir) == (
        str(sub / "run"),
        str(sub / "prepared"),
        str(sub / "out"),
    )


def test_an_org_name_path_that_exists_next_to_the_recipe_is_local(tmp_path: Path) -> None:
    (tmp_path / "acme" / "faq").mkdir(parents=True)
    recipe = load_recipe(write(tmp_path, "name: demo\ndata:\n  sources: [acme/faq]\n"))
    assert recipe.data.sources[0].path == str(tmp_path.resolve() / "acme/faq")


def test_split_shares_must_leave_training_data(tmp_path: Path) -> None:
    path = write(tmp_path, "name: demo\ndata:\n  split: {val: 0.5, test: 0.5}\n")
    [problem] = problems_of(path)
    assert "split.val + split.test must leave records for training" in problem
    assert problem.startswith(f"{path}:3: data.split:")


def test_split_sum_is_reported_with_the_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "name: demo\ndata:\n  format: nope\n  split: {val: 0.5, test: 0.5}\n")
    problems = problems_of(path)
    assert len(problems) == 2  # not only once the format is fixed
    assert any("data.format" in p for p in problems)
    assert any("split.val + split.test" in p for p in problems)


def test_duplicate_keys_are_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "name: demo\nseed: 1\ntrain:\n  epochs: 2\n  epochs: 5\nseed: 2\n")
    problems = problems_of(path)
    assert problems[0].startswith(f"{path}:5: train.epochs: duplicate key (first at line 4")
    assert problems[1].startswith(f"{path}:6: seed: duplicate key (first at line 2")
    assert len(problems) == 2


def test_overrides_set_nested_values_and_are_validated(tmp_path: Path) -> None:
    path = write(tmp_path, "name: demo\ntrain:\n  method: lora\n")
    recipe = load_recipe(path, ["train.learning_rate=1e-4", "train.lora.r=8", "seed=3"])
    assert (recipe.train.learning_rate, recipe.train.lora.r, recipe.seed) == (1e-4, 8, 3)
    with pytest.raises(ConfigError) as info:
        load_recipe(path, ["train.learnig_rate=1"])
    assert "did you mean train.learning_rate?" in str(info.value.problems[0])
    with pytest.raises(ConfigError, match="is not key=value"):
        load_recipe(path, ["train.epochs"])
