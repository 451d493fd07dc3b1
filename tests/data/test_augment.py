"""`astra data augment`: rewordings through a real `astra serve` of the default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astra_tune.data.augment import (
    REJECT_NEW_NUMBER,
    REJECT_NOT_ASKING,
    REJECT_SAME,
    REJECT_TERMS,
    rewrite_problem,
)
from tests.cli_runner import run_astra

QUESTION = "How long does the Orrery Tamsin's battery last?"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("For how many hours does the Orrery Tamsin run on one charge?", None),
        ("Tell me how long the Orrery Tamsin's battery lasts.", None),
        ("How long does the Orrery Tamsin's battery last?", REJECT_SAME),
        ("How long does its battery last?", REJECT_TERMS),  # the name is gone
        ("The Orrery Tamsin's battery lasts 5 hours.", REJECT_NOT_ASKING),  # an answer
        ("Does the Orrery Tamsin's battery last 5 hours?", REJECT_NEW_NUMBER),  # invented
    ],
)
def test_a_rewording_keeps_the_key_terms_and_asks(text: str, problem: str | None) -> None:
    assert rewrite_problem(QUESTION, text) == problem


def test_incomplete_settings_are_one_clear_error(tmp_path: Path) -> None:
    result = run_astra("data", "augment", str(tmp_path), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "--model" in result.stderr  # the endpoint may be left out: one is started
    assert "Traceback" not in result.stderr


def test_an_unreachable_endpoint_says_where(tmp_path: Path) -> None:
    from tests.serve.conftest import free_port

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    turns = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    record = {"messages": turns, "source": "x:1"}
    (prepared / "train.jsonl").write_text(json.dumps(record) + "\n")
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = run_astra("data", "augment", str(prepared), "-o", str(tmp_path / "out"),
                       "--endpoint", url, "--model", "m")  # fmt: skip
    assert result.exit_code == 2, result.stderr
    assert "cannot reach the augmentation endpoint" in result.stderr
    assert url in result.stderr
    assert not (tmp_path / "out").exists()  # nothing written half-way


@pytest.mark.slow
def test_paraphrases_through_astra_serve_keep_answers_and_are_cached(
    tmp_path: Path, default_gguf_file: Path
) -> None:
    from astra_tune.data.formats import prompt_text
    from astra_tune.data.split import contaminated
    from tests.serve.conftest import start_server, stop

    gguf = default_gguf_file
    prepared = tmp_path / "prepared"
    prep = run_astra("data", "prepare", "builtin:orrery", "-o", str(prepared))
    assert prep.exit_code == 0, prep.stderr
    train = (prepared / "train.jsonl").read_text().splitlines()
    (prepared / "train.jsonl").write_text("\n".join(train[:12]) + "\n")  # 12 questions: fast
    env = {"ASTRA_HOME": str(tmp_path / "home")}
    server = start_server(gguf)
    try:
        args = ("data", "augment", str(prepared), "--endpoint", f"{server.url}/v1",
                "--model", "smol-f16", "--paraphrase", "3", "--concurrency", "2")  # fmt: skip
        first = run_astra(*args, "-o", str(tmp_path / "a"), env=env)
        assert first.exit_code == 0, first.stderr
        counter = "astra:requests_total{route=/v1/chat/completions,status=200}"
        sent = server.metrics()[counter]
        assert sent == 12
        wrong = run_astra("data", "augment", str(prepared), "-o", str(tmp_path / "w"),
                          "--endpoint", f"{server.url}/v1", "--model", "no-such-model",
                          env=env)  # fmt: skip
        assert wrong.exit_code == 2, wrong.stderr
        assert "does not serve model 'no-such-model'" in wrong.stderr
        assert not (tmp_path / "w").exists()
        again = run_astra(*args, "-o", str(tmp_path / "b"), env=env)
        assert again.exit_code == 0, again.stderr
        after = server.metrics()[counter]
        assert after == sent  # the second run is answered from the cache alone
        assert "requests 0 (cached 12)" in again.stdout
        second = (tmp_path / "b" / "train.jsonl").read_text()
        fresh = {"ASTRA_HOME": str(tmp_path / "other-home")}
        budget = run_astra(*args, "-o", str(tmp_path / "c"), "--max-cost-tokens", "1", env=fresh)
        assert budget.exit_code == 0, budget.stderr
        assert "stopped: the token budget" in budget.stdout
        # The requests already in flight (--concurrency 2) finish; no new one starts.
        assert server.metrics()[counter] == after + 2
        # The same augmentation as a stage of `astra run`, answered from the same cache.
        subset = tmp_path / "subset.jsonl"
        subset.write_text("\n".join(train[:12]) + "\n")
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(
            "name: aug\ndata:\n  sources: [subset.jsonl]\n  split: {val: 0, test: 0}\n"
            f"  augment: {{endpoint: '{server.url}/v1', model: smol-f16, paraphrase: 3, "
            "concurrency: 2}\ntrain: {output_dir: run}\n"
        )
        staged = run_astra("run", str(recipe), "--until", "augment", env=env)
        assert staged.exit_code == 0, staged.stderr
        assert server.metrics()[counter] == after + 2
        augmented = (tmp_path / "run" / "augmented" / "train.jsonl").read_text().splitlines()
        assert len(augmented) == len(second.splitlines())
        rerun = run_astra("run", str(recipe), "--until", "augment", env=env)
        assert "augment: inputs unchanged, skipped" in rerun.stderr
    finally:
        stop(server)
    out = [json.loads(line) for line in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    assert second == (tmp_path / "a" / "train.jsonl").read_text()
    originals = {r["source"]: r for r in out[:12]}
    added = out[12:]
    assert added, first.stdout  # the default model gets some rewordings past the checks
    for record in added:
        original = originals[record["source"]]
        assert record["messages"][-1] == original["messages"][-1]  # the answer, verbatim
        assert record["messages"][-2]["content"] != original["messages"][-2]["content"]
        assert record["augmented_by"]["model"] == "smol-f16"
        assert rewrite_problem(original["messages"][-2]["content"],
                               record["messages"][-2]["content"]) is None  # fmt: skip
    held_out = [
        prompt_text(json.loads(line))
        for name in ("val", "test")
        for line in (tmp_path / "a" / f"{name}.jsonl").read_text().splitlines()
    ]
    assert not contaminated(held_out, [prompt_text(r) for r in added], threshold=0.8,
                            num_perm=128, shingle_words=3)  # fmt: skip
    report = json.loads((tmp_path / "a" / "report.json").read_text())["augment"]
    generated, accepted = report["generated"]["paraphrases"], report["accepted"]["paraphrases"]
    assert generated == accepted + sum(report["rejected"].values())
    assert accepted == len(added)


@pytest.mark.slow
def test_answers_doc_questions_and_negatives_through_astra_serve(
    tmp_path: Path, default_gguf_file: Path
) -> None:
    """Teacher answers, grounded questions from a passage, wrong answers as `rejected`."""
    from astra_tune.data.doc_questions import facts_of, gives_away, passages
    from astra_tune.evaluate.facts import check_answer

    gguf = default_gguf_file
    system = {"role": "system", "content": "You are the Orrery Labs support assistant."}
    unanswered = ["What is a robot vacuum?", "How do I clean a window?", "What is Wi-Fi?"]
    answered = [
        ("How much does the Orrery Vex cost?", "The Orrery Vex costs $349."),
        ("Where was the Orrery Mirel designed?", "The Orrery Mirel was designed in Porto."),
        ("When was the Orrery Quill released?", "The Orrery Quill was released in 2022."),
        ("How much does the Orrery Pico weigh?", "The Orrery Pico weighs 0.2 kg."),
    ]
    page = (
        "# Orrery Tamsin\n\nThe Orrery Tamsin is a pool-cleaning robot. It costs $1199, runs "
        "for 4 hours on a full charge and was designed in Perth. It has a solar recharging dock."
    )
    train = [{"messages": [system, {"role": "user", "content": q}], "source": f"t:{i}"}
             for i, q in enumerate(unanswered, 1)]  # fmt: skip
    train += [{"messages": [system, {"role": "user", "content": q},
                            {"role": "assistant", "content": a}], "source": f"t:{i}"}
              for i, (q, a) in enumerate(answered, 10)]  # fmt: skip
    train.append({"text": page, "source": "catalogue.md:1"})
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    env = {"ASTRA_HOME": str(tmp_path / "home")}
    # No --endpoint: the job serves the GGUF itself, on loopback, for as long as it runs.
    args = ("data", "augment", str(prepared), "-o", str(tmp_path / "a"), "--model", str(gguf),
            "--paraphrase", "0", "--answers", "--questions-from-docs", "--negatives",
            "--concurrency", "2")  # fmt: skip
    first = run_astra(*args, env=env)
    assert first.exit_code == 0, first.stderr
    out = [json.loads(line) for line in (tmp_path / "a" / "train.jsonl").read_text().splitlines()]
    report = json.loads((tmp_path / "a" / "report.json").read_text())["augment"]
    sent = report["requests"]
    again = run_astra(*args, env=env)
    assert again.exit_code == 0, again.stderr
    assert f"requests 0 (cached {sent})" in again.stdout
    generated, accepted = report["generated"], report["accepted"]
    # 3 answers, 2 draws per fact of the page, then a negative for every question.
    facts = [f.text for f in facts_of(passages(page, "catalogue.md:1")[0].text)]
    assert len(facts) == 2  # the name and what it is; price, hours and city
    assert sent == 3 + 2 * len(facts) + 7 + accepted.get("questions", 0)
    assert sum(generated.values()) == sum(accepted.values()) + sum(report["rejected"].values())
    # Every conversation now ends in an answer: the teacher's, or the original one.
    chats = [r for r in out if "messages" in r]
    assert all(r["messages"][-1]["role"] == "assistant" for r in chats)
    teacher = [r for r in out if r.get("augmented_by", {}).get("prompt") == "answer-v1"]
    assert accepted["answers"] == len(teacher) == 3
    for record in teacher:  # (a negative may have made it a preference record since)
        answer = record["chosen"] if "chosen" in record else record["messages"][-1]["content"]
        assert answer.strip()
    # Grounded pairs: each answer is one fact of the page, which they keep; the question
    # leaves that fact for the answer to state.
    questions = [r for r in out if "passage" in r]
    assert len(questions) == accepted.get("questions", 0)
    assert generated["questions"] == 2 * len(facts)
    for record in questions:
        assert record["source"] == "catalogue.md:1"
        assert record["passage"] == passages(page, "catalogue.md:1")[0].text
        if "chosen" in record:  # a negative made it a preference record since
            user, answer = record["prompt"][-1]["content"], record["chosen"]
        else:
            user, answer = record["messages"][-2]["content"], record["messages"][-1]["content"]
        assert answer in facts
        assert not gives_away(user, answer)
    # Negatives: preference records whose rejected answer gets a key fact wrong.
    preference = [r for r in out if "rejected" in r]
    assert len(preference) == accepted.get("negatives", 0) >= 1, report
    originals = dict(answered)
    for record in preference:
        question = record["prompt"][-1]["content"]
        if question in originals:
            assert record["chosen"] == originals[question]
        assert check_answer(record["rejected"], record["chosen"], question).recall != 100.0
        assert record["augmented_by"]["rejected"]["prompt"] == "negative-v1"


def test_prompts_are_shown_and_overridable(tmp_path: Path) -> None:
    args = ("data", "augment", str(tmp_path), "-o", str(tmp_path / "o"),
            "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--show-prompts")  # fmt: skip
    shown = run_astra(*args)
    assert shown.exit_code == 0, shown.stderr
    assert "Rewrite the question below in {n} different ways" in shown.stdout
    mine = tmp_path / "prompts.yaml"
    mine.write_text("paraphrase: 'Say {question} again, {n} times, one per line.'\n")
    custom = run_astra(*args, "--prompts", str(mine))
    assert "Say {question} again, {n} times" in custom.stdout
    mine.write_text("paraphrase: 'No placeholders here.'\n")
    bad = run_astra(*args, "--prompts", str(mine))
    assert bad.exit_code == 2
    assert "must contain {question} and {n}" in bad.stderr
