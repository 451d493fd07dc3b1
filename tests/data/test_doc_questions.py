"""Passages and grounded question/answer pairs for questions-from-docs."""

from __future__ import annotations

from astra_tune.data.doc_questions import (
    ANSWER_PASSAGE_WORDS,
    REJECT_UNGROUNDED,
    answer_passages,
    grounding_problem,
    parse_pairs,
    passages,
)

DOC = (
    "# Installing\n\n"
    "Run the installer with `astra-setup --user`. It needs 2 GB of free disk.\n\n"
    + " ".join(["filler"] * 150)
    + "\n\n"
    "The installer writes its log to /var/log/astra.log.\n\n"
    "## Uninstalling\n\n"
    "Remove it with `astra-setup --remove`; settings stay in ~/.astra."
)


def test_passages_break_at_headings_and_at_the_word_limit() -> None:
    found = passages(DOC, "docs/install.md:1", max_words=160)
    texts = [p.text for p in found]
    assert len(texts) == 3, texts
    assert texts[0].startswith("# Installing")
    assert "2 GB" in texts[0]
    # The limit starts a new passage at a paragraph boundary, never inside one.
    assert "filler" not in texts[0]
    assert texts[1].startswith("filler")
    assert texts[1].endswith("/var/log/astra.log.")
    assert texts[2].startswith("## Uninstalling")
    assert "--remove" in texts[2]
    assert {p.source for p in found} == {"docs/install.md:1"}
    # A heading with no text under it is no passage.
    assert passages("# Empty\n\n## Also empty", "x") == []


def test_pairs_are_read_from_labelled_lines() -> None:
    reply = (
        "1. Q: How much disk does the installer need?\n"
        "A: It needs 2 GB of free disk.\n\n"
        "**Question 2:** Where is the log written?\n"
        "**Answer:** To /var/log/astra.log,\n"
        "and nowhere else.\n"
        "Q: A question with no answer?\n"
    )
    assert parse_pairs(reply) == [
        ("How much disk does the installer need?", "It needs 2 GB of free disk."),
        ("Where is the log written?", "To /var/log/astra.log, and nowhere else."),
    ]
    assert parse_pairs("Sure! Here are some questions about it.") == []


def test_a_pair_is_grounded_only_when_its_facts_are_in_the_passage() -> None:
    passage = passages(DOC, "x")[0].text
    assert grounding_problem(passage, "How much disk is needed?", "2 GB of free disk.") is None
    # An invented number, an invented name.
    assert grounding_problem(passage, "How much disk?", "It needs 4 GB.") == REJECT_UNGROUNDED
    assert (
        grounding_problem(passage, "What runs it?", "Run `astra-install --all`.")
        == REJECT_UNGROUNDED
    )


def test_a_long_faq_answer_is_a_passage_under_its_question() -> None:
    """An FAQ answer with several facts gets its own questions; a one-fact answer does not."""
    answer = (
        "By default the context window is 4096 tokens. Set `OLLAMA_CONTEXT_LENGTH` to change "
        "it for the server, or use `/set parameter num_ctx 8192` inside `ollama run`. "
        + " ".join(["More"] * ANSWER_PASSAGE_WORDS)
    )
    found = answer_passages("How can I specify the context window size?", answer, "faq.md:20")
    assert [p.source for p in found] == ["faq.md:20"]
    assert found[0].text.startswith("## How can I specify the context window size?\n\nBy")
    assert "`OLLAMA_CONTEXT_LENGTH`" in found[0].text
    assert answer_passages("What port?", "It listens on port 11434.", "faq.md:9") == []
