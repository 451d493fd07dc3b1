"""Passages and grounded question/answer pairs for questions-from-docs."""

from __future__ import annotations

import pytest

from astra_tune.data.doc_questions import (
    ANSWER_PASSAGE_WORDS,
    answer_passages,
    common_words,
    facts_of,
    gives_away,
    off_topic,
    parse_question,
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


def test_a_passage_is_cut_into_the_statements_that_hold_facts() -> None:
    passage = (
        "## How do I keep a model loaded?\n\n"
        "By default models stay in memory for 5 minutes. This helps when you make many "
        "requests to it. To unload one at once, use the `ollama stop` command:\n\n"
        "```shell\nollama stop llama3.2\n```\n\n"
        "<Note>\n\n"
        "- `OLLAMA_KEEP_ALIVE` sets it for every model (e.g. 10m or 24h).\n"
        "- a negative number keeps it loaded forever\n\n"
        "</Note>"
    )
    facts = facts_of(passage)
    assert [f.text for f in facts] == [
        "By default models stay in memory for 5 minutes.",
        "To unload one at once, use the `ollama stop` command:\n\n"
        "```shell\nollama stop llama3.2\n```",  # the command stays with its sentence
        "`OLLAMA_KEEP_ALIVE` sets it for every model (e.g. 10m or 24h).",  # not cut at e.g.
    ]  # the sentences without a number, name or term are no facts
    assert {f.heading for f in facts} == {"How do I keep a model loaded?"}
    # A passage that continues a section keeps the heading in force.
    assert facts_of("It listens on port 11434.", "Networking")[0].heading == "Networking"


@pytest.mark.parametrize(
    ("reply", "question"),
    [
        ("Question: What is the default K/V cache type?\n\nAnswer: f16", "What is the default "
         "K/V cache type?"),
        ('1. "How long do models stay loaded?"\n2. Why?', "How long do models stay loaded?"),
        ("**Q:** Which port does it use?", "Which port does it use?"),
        ('A user might ask: "Which port does it use?"', "Which port does it use?"),
        ("Here is a user's question: Which port?", "Which port?"),
        ("Answer: How do I update it?", "How do I update it?"),
        ("Here is a question for you.", None),
    ],
)  # fmt: skip
def test_the_question_is_read_from_a_reply(reply: str, question: str | None) -> None:
    assert parse_question(reply) == question


def test_a_question_that_states_the_answer_teaches_nothing() -> None:
    fact = "By default, Ollama uses a context window size of 4096 tokens."
    assert gives_away("Does Ollama use a context of 4096 tokens by default?", fact)
    assert not gives_away("What is Ollama's default context window size?", fact)


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


def test_a_question_about_something_else_is_off_topic() -> None:
    facts = facts_of(
        "## Ollama\n\nOllama binds 127.0.0.1 port 11434 by default. Ollama keeps models in "
        "memory for 5 minutes. Restart the Ollama application after a change of `OLLAMA_HOST`."
    )
    common = common_words(facts)
    assert "ollama" in common  # in every fact: the topic of the folder, not of one fact
    restart = facts[2].text
    assert off_topic("How do I remove my email address from a website?", restart, common)
    assert off_topic("What should I know about Ollama?", restart, common)  # only the brand
    assert not off_topic("What must I do after changing OLLAMA_HOST?", restart, common)
    assert not off_topic("Which port does the server bind?", facts[0].text, common)
