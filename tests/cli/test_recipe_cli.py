from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_runner import run_astra


def test_validate_reports_the_misspelled_key_and_exits_2(tmp_path: Path) -> None:
    recipe = tmp_path / "run.yaml"
    recipe.write_text("name: demo\nbase_modle: smollm2-135m-instruct\n")
    result = run_astra("recipe", "validate", str(recipe))
    assert result.exit_code == 2
    assert f"{recipe}:2: base_modle: unknown key — did you mean base_model?" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_validate_accepts_a_good_recipe(tmp_path: Path) -> None:
    recipe = tmp_path / "run.yaml"
    recipe.write_text("name: demo\nseed: 7\n")
    result = run_astra("recipe", "validate", str(recipe))
    assert result.exit_code == 0, result.stderr
    assert "valid" in result.stdout


def test_validate_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_astra("recipe", "validate", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "recipe file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_show_lists_every_field_with_default_and_description() -> None:
    result = run_astra("recipe", "show")
    assert result.exit_code == 0
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "(required)" in lines["name"]
    assert "smollm2-135m-instruct" in lines["base_model"]
    assert "42" in lines["seed"]
    assert "Random seed" in lines["seed"]


def test_show_with_a_file_prints_its_values(tmp_path: Path) -> None:
    recipe = tmp_path / "run.yaml"
    recipe.write_text("name: my-bot\nseed: 7\n")
    result = run_astra("recipe", "show", str(recipe))
    assert result.exit_code == 0
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if "│" in line}
    assert "my-bot" in lines["name"]
    assert " 7 " in lines["seed"]


def test_validate_reports_missing_sources_with_every_other_problem(tmp_path: Path) -> None:
    (tmp_path / "here.jsonl").write_text("{}\n")
    recipe = tmp_path / "run.yaml"
    recipe.write_text(
        "name: demo\nseed: -1\ndata:\n  sources:\n    - builtin:orrery\n"
        f"    - {tmp_path / 'here.jsonl'}\n    - {tmp_path / 'gone.jsonl'}\n"
        f"    - {{path: {tmp_path / 'also-gone.csv'}}}\n"
    )
    result = run_astra("recipe", "validate", str(recipe))
    assert result.exit_code == 2
    assert "(3 problems)" in result.stderr
    assert f"{recipe}:7: data.sources[2]: file not found: {tmp_path / 'gone.jsonl'}" in (
        result.stderr.replace("\n", "")
    )
    assert "data.sources[3]: file not found" in result.stderr
    assert "seed:" in result.stderr
    assert "data.sources[1]" not in result.stderr
    assert "data.sources[0]" not in result.stderr


def test_validate_looks_for_relative_sources_next_to_the_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "faq.jsonl").write_text("{}\n")
    (tmp_path / "gone.jsonl").write_text("{}\n")  # in the working directory only
    recipe = tmp_path / "sub" / "run.yaml"
    recipe.write_text("name: demo\ndata:\n  sources: [faq.jsonl, gone.jsonl]\n")
    monkeypatch.chdir(tmp_path)
    result = run_astra("recipe", "validate", "sub/run.yaml")
    assert result.exit_code == 2
    assert "(1 problem)" in result.stderr
    missing = (tmp_path / "sub" / "gone.jsonl").resolve()
    assert f"data.sources[1]: file not found: {missing}" in result.stderr.replace("\n", "")


def test_show_gives_each_source_entrys_values(tmp_path: Path) -> None:
    recipe = tmp_path / "run.yaml"
    recipe.write_text(
        "name: demo\ndata:\n  sources: [builtin:orrery, {path: builtin:orrery, format: openai}]\n"
    )
    result = run_astra("recipe", "show", str(recipe))
    assert result.exit_code == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "data.sources[].format" in line)
    assert "['auto', 'openai']" in row
    assert "auto | alpaca | dolly" in row  # the type, as a recipe author writes it


def test_piped_tables_are_not_cut_to_80_columns() -> None:
    # No terminal and no $COLUMNS: rich would assume 80 columns and cut cells ("data.s…").
    result = run_astra("recipe", "show", env={"COLUMNS": ""})
    assert result.exit_code == 0, result.stderr
    assert "data.sources[].assign_to" in result.stdout
    assert "…" not in result.stdout
