"""`astra import`, `astra modelfile` and `astra push ollama`, through real servers."""

from __future__ import annotations

import shutil
from pathlib import Path

import ollama
import openai
import pytest

from tests.cli_runner import run_astra
from tests.serve.conftest import start_server, stop


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    return {"ASTRA_HOME": str(tmp_path / "home")}


def test_import_customize_and_serve(
    tmp_path: Path, tiny_gguf_file: Path, home: dict[str, str]
) -> None:
    models = tmp_path / "downloads"
    models.mkdir()
    gguf = Path(shutil.copy(tiny_gguf_file, models / "tiny-f16.gguf"))

    imported = run_astra("import", str(gguf), "--name", "tiny", env=home)
    assert imported.exit_code == 0, imported.stderr
    assert "registered: tiny:1.0.0" in imported.stdout
    assert "translated to an Ollama TEMPLATE (proven)" in imported.stdout
    written = (models / "Modelfile").read_text()
    assert "FROM ./tiny-f16.gguf\n" in written
    assert 'TEMPLATE """{{- if not (and .Messages' in written
    assert 'PARAMETER stop "<|im_end|>"' in written

    custom = run_astra(
        "modelfile", "tiny", "--system", "You are terse.", "--param", "temperature=0.1",
        "--param", "stop=###", "-p", "num_predict=5", "--name", "terse",
        "-o", str(tmp_path / "Modelfile"), env=home,
    )  # fmt: skip
    assert custom.exit_code == 0, custom.stderr
    assert "registered: terse:1.0.0" in custom.stdout
    assert (tmp_path / "Modelfile").read_text().splitlines()[1:] == [
        "FROM tiny",
        "PARAMETER temperature 0.1",
        'PARAMETER stop "###"',
        "PARAMETER num_predict 5",
        'SYSTEM """You are terse."""',
    ]
    legacy_template = tmp_path / "legacy.tmpl"
    legacy_template.write_text("<<{{ .Prompt }}>>")
    legacy = run_astra(
        "modelfile", "tiny", "--template-file", str(legacy_template), "--name", "legacy",
        "-o", str(tmp_path / "legacy.Modelfile"), env=home,
    )  # fmt: skip
    assert legacy.exit_code == 0, legacy.stderr
    assert "renders 8 probe conversations differently" in legacy.stdout  # warned, not refused

    server = start_server(tiny_gguf_file, env=home, serve_file=False)
    try:
        client = ollama.Client(host=server.url)
        shown = client.show("terse")
        assert 'SYSTEM """You are terse."""' in (shown.modelfile or "")
        assert "temperature" in (shown.parameters or "")
        assert '"###"' in (shown.parameters or "")
        assert (shown.template or "").startswith("{{- if not (and .Messages")
        options = {"temperature": 0, "num_predict": 8, "repeat_penalty": 1.0}
        hello = [{"role": "user", "content": "hello"}]
        # The custom model is exactly the base model with that system prompt.
        terse = [{"role": "system", "content": "You are terse."}, *hello]
        with_system = client.chat(model="tiny", messages=terse, options=options)
        via_custom = client.chat(model="terse", messages=hello, options=options)
        plain = client.chat(model="tiny", messages=hello, options=options)
        assert via_custom.prompt_eval_count == with_system.prompt_eval_count
        assert via_custom.message.content == with_system.message.content
        assert via_custom.prompt_eval_count != plain.prompt_eval_count
        # Its PARAMETERs are the defaults of both APIs (num_predict=5 here).
        openai_reply = openai.OpenAI(
            base_url=f"{server.url}/v1", api_key="x"
        ).chat.completions.create(
            model="terse",
            messages=hello,
            temperature=0,  # type: ignore[arg-type]
        )
        assert openai_reply.usage is not None
        assert openai_reply.usage.completion_tokens == 5
        assert openai_reply.choices[0].finish_reason == "length"
        assert client.chat(model="terse", messages=hello).eval_count == 5
        # A hand-written TEMPLATE is what the server renders prompts with.
        assert client.show("legacy").template == "<<{{ .Prompt }}>>"
        by_template = client.chat(model="legacy", messages=hello, options=options)
        raw = client.generate(model="tiny", prompt="<<hello>>", raw=True, options=options)
        assert by_template.prompt_eval_count == raw.prompt_eval_count
        assert by_template.message.content == raw.response
    finally:
        stop(server)


def test_modelfile_errors_are_clear(
    tmp_path: Path, tiny_gguf_file: Path, home: dict[str, str]
) -> None:
    bad = tmp_path / "Modelfile"
    bad.write_text(f"FROM {tiny_gguf_file}\nPARAMETER temperature warm\n")
    result = run_astra("modelfile", "--from-file", str(bad), "--name", "x", env=home)
    assert result.exit_code == 2
    assert "temperature must be a number, not 'warm'" in result.stderr
    assert f"{bad}:2" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run_astra("modelfile", "nothing-like-this", "--name", "x", "-o",
                        str(tmp_path / "M2"), env=home)  # fmt: skip
    assert missing.exit_code == 2
    assert "not a GGUF file and not a registry model" in missing.stderr
    unknown = run_astra("modelfile", str(tiny_gguf_file), "-p", "temprature=1", env=home)
    assert unknown.exit_code == 2
    assert "unknown parameter 'temprature'" in unknown.stderr


def test_flags_override_a_modelfile_from_file(
    tmp_path: Path, tiny_gguf_file: Path, home: dict[str, str]
) -> None:
    from astra_tune.registry.store import Registry

    given = tmp_path / "Modelfile"
    given.write_text(f'FROM {tiny_gguf_file}\nSYSTEM """From the file."""\n'
                     "PARAMETER temperature 0.9\nPARAMETER top_k 5\n")  # fmt: skip
    result = run_astra("modelfile", "--from-file", str(given), "--name", "flagged",
                       "--system", "From the flag.", "-p", "temperature=0.1", env=home)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    version = Registry(Path(home["ASTRA_HOME"]) / "registry").resolve("flagged")
    assert version.system == "From the flag."
    assert version.params["temperature"] == 0.1  # the flag wins
    assert version.params["top_k"] == 5  # what the flags leave alone stays as the file says
    refused = run_astra("modelfile", "--from-file", str(given), "-o", str(tmp_path / "M"),
                        env=home)  # fmt: skip
    assert refused.exit_code == 2
    assert "--from-file registers one as is" in refused.stderr


@pytest.mark.slow
def test_push_to_an_ollama_server_answers_like_astra_chat(
    tmp_path: Path, home: dict[str, str], default_model_dir: Path
) -> None:
    """The default model (f16 GGUF), pushed to a second server through the Ollama API."""
    from transformers import AutoTokenizer

    from astra_tune.export.convert import write_gguf

    gguf = tmp_path / "smol.gguf"
    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    write_gguf(default_model_dir, gguf, "f16", tokenizer=tokenizer, metadata={"name": "smol"})
    assert run_astra("import", str(gguf), "--name", "smol", env=home).exit_code == 0
    remote = start_server(gguf, env={"ASTRA_HOME": str(tmp_path / "remote")}, serve_file=False)
    try:
        pushed = run_astra("push", "ollama", "smol", "--host", remote.url, "--as", "smol-pushed",
                           env=home)  # fmt: skip
        assert pushed.exit_code == 0, pushed.stderr
        assert "pushed: smol-pushed" in pushed.stdout
        client = ollama.Client(host=remote.url)
        assert "smol-pushed:latest" in [m.model for m in client.list().models]
        question = "What is the capital of France?"
        reply = client.chat(
            model="smol-pushed",
            messages=[{"role": "user", "content": question}],
            options={"temperature": 0, "seed": 7, "num_predict": 40, "repeat_penalty": 1.0},
        )
        local = run_astra("chat", str(gguf), "-p", question, "--temperature", "0", "--seed", "7",
                          "--max-tokens", "40", env=home)  # fmt: skip
        assert local.exit_code == 0, local.stderr
        assert reply.message.content.strip() == local.stdout.strip()
        assert "Paris" in reply.message.content
        again = run_astra("push", "ollama", "smol", "--host", remote.url, "--as", "smol-pushed",
                          env=home)  # fmt: skip
        assert "0 blobs uploaded, 1 already there" in again.stdout
    finally:
        stop(remote)
