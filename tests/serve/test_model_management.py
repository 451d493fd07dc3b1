"""Ollama's create (with blobs), copy and delete, stored in the registry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import ollama
import pytest

from tests.serve.conftest import start_server, stop


def test_create_copy_delete(tiny_gguf_file: Path, tmp_path: Path) -> None:
    server = start_server(tiny_gguf_file, env={"ASTRA_HOME": str(tmp_path / "home")})
    try:
        client = ollama.Client(host=server.url)
        digest = "sha256:" + hashlib.sha256(tiny_gguf_file.read_bytes()).hexdigest()
        assert httpx.head(f"{server.url}/api/blobs/{digest}", timeout=5).status_code == 404
        assert client.create_blob(tiny_gguf_file) == digest
        assert httpx.head(f"{server.url}/api/blobs/{digest}", timeout=5).status_code == 200
        bad = httpx.post(f"{server.url}/api/blobs/sha256:{'0' * 64}", content=b"x", timeout=5)
        assert bad.status_code == 400
        assert "hash to" in bad.json()["error"]

        client.create(model="terse", files={"tiny.gguf": digest}, system="You are terse.",
                      parameters={"temperature": 0.1})  # fmt: skip
        names = [m.model for m in client.list().models]
        assert "terse:latest" in names
        assert "terse:1.0.0" in names
        shown = client.show("terse")
        assert 'SYSTEM """You are terse."""' in (shown.modelfile or "")
        reply = client.chat(model="terse", messages=[{"role": "user", "content": "hi"}],
                            options={"num_predict": 3})  # fmt: skip
        assert reply.eval_count == 3

        client.create(model="terse-q8", from_="terse", quantize="q8_0")
        assert client.show("terse-q8").details.quantization_level == "Q8_0"  # type: ignore[union-attr]

        client.copy("terse", "terse-copy")
        assert "terse-copy:latest" in [m.model for m in client.list().models]
        client.delete("terse-copy:latest")
        assert not any(m.model.startswith("terse-copy") for m in client.list().models)
        with pytest.raises(ollama.ResponseError) as caught:
            client.create(model="x", files={"m.gguf": "sha256:" + "1" * 64})
        assert "missing" in caught.value.error
    finally:
        stop(server)


def test_equal_parameters_share_one_params_blob(tiny_gguf_file: Path, tmp_path: Path) -> None:
    """/api/create and `astra modelfile` build their layers in one place: same bytes."""
    from astra_tune.registry.layers import KIND_OF
    from astra_tune.registry.store import Registry
    from tests.cli_runner import run_astra

    home = tmp_path / "home"
    server = start_server(tiny_gguf_file, env={"ASTRA_HOME": str(home)})
    try:
        client = ollama.Client(host=server.url)
        digest = client.create_blob(tiny_gguf_file)
        client.create(model="via-api", files={"tiny.gguf": digest},
                      parameters={"top_k": 12, "temperature": 0.3})  # fmt: skip
    finally:
        stop(server)
    made = run_astra(
        "modelfile", str(tiny_gguf_file), "--name", "via-cli",
        "--param", "top_k=12", "--param", "temperature=0.3",
        "-o", str(tmp_path / "Modelfile"), env={"ASTRA_HOME": str(home)},
    )  # fmt: skip
    assert made.exit_code == 0, made.stderr

    def params_blob(name: str) -> tuple[str, dict[str, object]]:
        version = Registry(home / "registry").resolve(name)
        layers = [
            layer for layer in version.manifest["layers"] if KIND_OF[layer["mediaType"]] == "params"
        ]
        assert len(layers) == 1
        return layers[0]["digest"], version.params

    api_digest, api_params = params_blob("via-api")
    cli_digest, cli_params = params_blob("via-cli")
    assert api_params == cli_params == {
        "stop": api_params["stop"], "temperature": 0.3, "top_k": 12,
    }  # fmt: skip
    assert api_params["stop"]  # the model's own end-of-turn marker came along
    assert api_digest == cli_digest


def test_a_modelfile_num_ctx_sizes_the_served_context(tiny_gguf_file: Path, tmp_path: Path) -> None:
    server = start_server(tiny_gguf_file, env={"ASTRA_HOME": str(tmp_path / "home")})
    try:
        client = ollama.Client(host=server.url)
        digest = client.create_blob(tiny_gguf_file)
        client.create(model="short", files={"tiny.gguf": digest}, parameters={"num_ctx": 256})
        long_prompt = [{"role": "user", "content": "word " * 400}]
        with pytest.raises(ollama.ResponseError) as refused:
            client.chat(model="short", messages=long_prompt, options={"num_predict": 2})
        assert refused.value.status_code == 400
        assert "the context holds 256" in refused.value.error
        # The same prompt fits the server's default context on the file itself.
        fits = client.chat(model="tiny-f16", messages=long_prompt, options={"num_predict": 2})
        assert fits.eval_count
    finally:
        stop(server)
