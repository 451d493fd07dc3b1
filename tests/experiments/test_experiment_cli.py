"""`astra experiment`: bad input gets exit 2 and names the field; nothing half-created."""

from __future__ import annotations

from pathlib import Path

from astra_tune.registry.store import Registry
from tests.cli_runner import run_astra


def test_bad_experiments_are_refused_with_their_fields(
    tmp_path: Path, two_versions: Registry
) -> None:
    env = {"ASTRA_HOME": str(tmp_path / "home")}
    bad = run_astra("experiment", "create", "wren", "--model", "orrery",
                    "--arm", "control=orrery:1.0.0", "--arm", "candidate=orrery:9.9.9",
                    "--split", "60,30", env=env)  # fmt: skip
    assert bad.exit_code == 2
    assert "Traceback" not in bad.stderr
    assert "split: weights sum to 90, not 100" in bad.stderr
    assert "arms.candidate: orrery:9.9.9 does not exist" in bad.stderr
    config = tmp_path / "ab.yaml"
    config.write_text("name: wren\nmodel: orrery\narms: {control: orrery:1.0.0}\nsplit: [100]\n"
                      "colour: blue\n")  # fmt: skip
    from_file = run_astra("experiment", "create", "--config", str(config), env=env)
    assert from_file.exit_code == 2
    assert "ab.yaml: colour: Extra inputs are not permitted" in from_file.stderr
    config.write_text("name: wren\nmodel: orrery\narms: {control: orrery:1.0.0}\nsplit: [100]\n")
    one_arm = run_astra("experiment", "create", "--config", str(config), env=env)
    assert one_arm.exit_code == 2
    assert "arms: an experiment needs at least two arms" in one_arm.stderr
    config.write_text("name: wren\nmodel: orrery\ncolour: blue\n")
    three = run_astra("experiment", "create", "wren", "--model", "orrery", "--split", "40,30,30",
                      "--arm", "a=orrery:1.0.0", "--arm", "b=orrery:1.0.1",
                      "--arm", "c=orrery:1.0.1", env=env)  # fmt: skip
    assert three.exit_code == 2
    assert "3 arms, but servers keep 2 models loaded" in three.stderr
    assert "no experiments" in run_astra("experiment", "list", env=env).stdout
    missing = run_astra("experiment", "status", "nosuch", env=env)
    assert missing.exit_code == 2
    assert "no experiment named 'nosuch'" in missing.stderr

    good = run_astra("experiment", "create", "--config", str(config), "--split", "90,10",
                     "--arm", "control=orrery:1.0.0", "--arm", "candidate=orrery:1.0.1",
                     env=env)  # fmt: skip
    assert good.exit_code == 2  # flags do not excuse the file's unknown field
    config.write_text("name: wren\nmodel: orrery\n")
    good = run_astra("experiment", "create", "--config", str(config), "--split", "90,10",
                     "--arm", "control=orrery:1.0.0", "--arm", "candidate=orrery:1.0.1",
                     env=env)  # fmt: skip
    assert good.exit_code == 0, good.stderr
    shown = run_astra("experiment", "status", "wren", env=env).stdout
    assert "orrery:1.0.1" in shown  # the arm's reference until it has served anything
    assert "10%" in shown
    assert "decision: keep collecting (fewer than 100 ratings on control, candidate)" in shown
    cross = run_astra("experiment", "stop", "wren", "--promote", "treatment", env=env)
    assert cross.exit_code == 2
    assert "no arm 'treatment'" in cross.stderr
