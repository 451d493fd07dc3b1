"""Push, resolve, versions, aliases, removal and garbage collection (one process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astra_tune.errors import ConfigError
from astra_tune.export.versions import request_from_gguf
from astra_tune.registry.store import Registry, RegistryError, VersionNotFoundError
from tests.registry.conftest import blob_files, other_gguf


def test_push_stores_a_gguf_with_its_template_and_stops(
    registry: Registry, tiny_gguf: Path, smollm2_tokenizer: object
) -> None:
    pushed = registry.push(request_from_gguf(tiny_gguf, "tiny"))
    assert (pushed.name, pushed.version) == ("tiny", "1.0.0")
    assert pushed.new_bytes > tiny_gguf.stat().st_size
    version = registry.resolve("tiny")
    assert version.version == "1.0.0"
    assert version.aliases == ["latest"]
    (quant,) = version.models
    assert quant == "f16"
    assert version.models["f16"].read_bytes() == tiny_gguf.read_bytes()
    assert version.chat_template == smollm2_tokenizer.chat_template  # type: ignore[attr-defined]
    assert version.params == {"stop": ["<|im_end|>"]}
    assert version.license == "apache-2.0"
    manifest = version.manifest
    assert manifest["schemaVersion"] == 2
    kinds = [layer["mediaType"] for layer in manifest["layers"]]
    assert kinds[0] == "application/vnd.ollama.image.model"
    assert "application/vnd.ollama.image.params" in kinds
    assert manifest["layers"][0]["annotations"]["org.astra.quantization"] == "f16"
    config = json.loads(registry.blobs.read_bytes(manifest["config"]["digest"]))
    assert config["model_format"] == "gguf"
    assert config["model_family"] == "llama"


def test_same_file_twice_is_stored_once(registry: Registry, tiny_gguf: Path) -> None:
    first = registry.push(request_from_gguf(tiny_gguf, "tiny"))
    before = blob_files(registry)
    second = registry.push(request_from_gguf(tiny_gguf, "tiny"))
    assert (second.version, second.existing) == ("1.0.0", True)  # no identical 1.0.1
    assert second.manifest_digest == first.manifest_digest
    assert second.new_bytes == 0
    assert [v["version"] for v in registry.list_versions("tiny")] == ["1.0.0"]
    assert blob_files(registry) == before
    asked = registry.push(request_from_gguf(tiny_gguf, "tiny"), version="1.1.0")
    assert (asked.version, asked.existing) == ("1.1.0", False)  # an explicit version is made
    registry.push(request_from_gguf(tiny_gguf, "copy"))
    assert blob_files(registry) == before  # another name, same content: still one copy


def test_versions_are_immutable_and_latest_is_the_newest(
    registry: Registry, tiny_gguf: Path, tmp_path: Path
) -> None:
    request = request_from_gguf(tiny_gguf, "tiny")
    assert registry.push(request, version="2.0.0").version == "2.0.0"
    with pytest.raises(RegistryError, match="immutable"):
        registry.push(request, version="2.0.0")
    assert registry.push(request, version="1.5.0").version == "1.5.0"
    assert registry.resolve("tiny").version == "2.0.0"  # an older number does not move latest
    other = other_gguf(tiny_gguf, tmp_path / "other.gguf", b"\x05\x06\x07\x08")
    assert registry.push(request_from_gguf(other, "tiny")).version == "2.0.1"
    with pytest.raises(ConfigError, match=r"MAJOR\.MINOR\.PATCH"):
        registry.push(request, version="2.1")
    assert [v["version"] for v in registry.list_versions("tiny")] == ["2.0.1", "2.0.0", "1.5.0"]


def test_aliases_move_with_history_and_roll_back(
    registry: Registry, tiny_gguf: Path, tmp_path: Path
) -> None:
    registry.push(request_from_gguf(tiny_gguf, "tiny"))
    other = other_gguf(tiny_gguf, tmp_path / "other.gguf", b"\x01\x02\x03\x04")
    registry.push(request_from_gguf(other, "tiny"))
    assert registry.tag("tiny:1.0.0", "production", reason="launch") == (None, "1.0.0")
    assert registry.tag("tiny:1.0.1", "production", reason="better eval") == ("1.0.0", "1.0.1")
    assert registry.resolve("tiny:production").models["f16"].read_bytes() == other.read_bytes()
    assert registry.rollback("tiny", "production") == ("1.0.1", "1.0.0")
    assert registry.resolve("tiny:production").version == "1.0.0"
    moves = [(e["from"], e["to"], e["reason"]) for e in registry.history("tiny", "production")]
    assert moves == [
        (None, "1.0.0", "launch"),
        ("1.0.0", "1.0.1", "better eval"),
        ("1.0.1", "1.0.0", "rollback from 1.0.1"),
    ]
    with pytest.raises(ConfigError, match="looks like a version"):
        registry.tag("tiny:1.0.0", "3.0.0")
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback("tiny", "staging")
    with pytest.raises(RegistryError, match=r"tiny:9\.9\.9 does not exist") as caught:
        registry.tag("tiny:9.9.9", "staging")
    assert "1.0.0, 1.0.1" in str(caught.value)  # the error lists what exists
    with pytest.raises(VersionNotFoundError, match="no model named 'nosuch'"):
        registry.history("nosuch")  # not an empty list: the name is probably mistyped
    assert registry.history("tiny", "staging") == []  # a known model, an unused alias


def test_remove_and_garbage_collect(registry: Registry, tiny_gguf: Path, tmp_path: Path) -> None:
    registry.push(request_from_gguf(tiny_gguf, "tiny"))
    other = other_gguf(tiny_gguf, tmp_path / "other.gguf", b"\x09\x08\x07\x06")
    registry.push(request_from_gguf(other, "tiny"))
    registry.tag("tiny:1.0.1", "production")
    other_digest = registry.resolve("tiny:1.0.1").manifest["layers"][0]["digest"]
    assert registry.remove("tiny:production", gc=False) == ["tiny:production"]
    removed = registry.remove("tiny:1.0.1", gc=False)
    assert removed == ["tiny:1.0.1", "tiny:latest"]
    assert registry.resolve("tiny").version == "1.0.0"  # latest falls back to the newest left
    assert registry.blobs.exists(other_digest)
    assert registry.gc(grace_seconds=3600)[0] == 0  # young blobs wait (pushes in flight)
    count, freed = registry.gc(grace_seconds=0)
    assert count >= 1
    assert freed >= other.stat().st_size
    assert not registry.blobs.exists(other_digest)
    assert registry.resolve("tiny").models["f16"].read_bytes() == tiny_gguf.read_bytes()
    with pytest.raises(RegistryError, match="does not exist"):
        registry.remove("tiny:staging")


def test_corrupted_and_missing_blobs_name_their_versions(
    registry: Registry, tiny_gguf: Path
) -> None:
    registry.push(request_from_gguf(tiny_gguf, "tiny"))
    registry.push(request_from_gguf(tiny_gguf, "twin"))
    digest = registry.resolve("tiny").manifest["layers"][0]["digest"]
    path = registry.root / "blobs" / f"sha256-{digest.split(':')[1]}"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    fresh = Registry(registry.root)  # no digests verified yet in this process
    with pytest.raises(RegistryError) as caught:
        fresh.resolve("tiny")
    message = str(caught.value)
    assert digest in message
    assert "corrupted" in message
    assert "tiny:1.0.0" in message
    assert "twin:1.0.0" in message
    (problem,) = fresh.verify()
    assert problem.digest == digest
    assert problem.versions == ["tiny:1.0.0", "twin:1.0.0"]
    path.unlink()
    (problem,) = Registry(registry.root).verify()
    assert "missing" in problem.problem


def test_index_url_and_blob_directory_are_configurable(
    tmp_path: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASTRA_REGISTRY_URL", f"sqlite:///{tmp_path / 'shared-index.db'}")
    monkeypatch.setenv("ASTRA_REGISTRY_BLOBS", str(tmp_path / "volume"))
    registry = Registry(tmp_path / "registry")
    registry.push(request_from_gguf(tiny_gguf, "tiny"))
    assert (tmp_path / "shared-index.db").is_file()
    assert not (tmp_path / "registry" / "index.db").exists()
    assert len(list((tmp_path / "volume").glob("sha256-*"))) >= 5
    assert not (tmp_path / "registry" / "blobs").exists()
    assert Registry(tmp_path / "registry").resolve("tiny").version == "1.0.0"


def test_rm_frees_the_removed_versions_own_blobs_at_once(
    registry: Registry, tiny_gguf: Path, tmp_path: Path
) -> None:
    registry.push(request_from_gguf(tiny_gguf, "tiny"))
    other = other_gguf(tiny_gguf, tmp_path / "other.gguf", b"\x05\x05\x05\x05")
    registry.push(request_from_gguf(other, "tiny"))
    kept = registry.resolve("tiny:1.0.0").manifest["layers"][0]["digest"]
    gone = registry.resolve("tiny:1.0.1").manifest["layers"][0]["digest"]
    registry.remove("tiny:1.0.1")
    assert not registry.blobs.exists(gone)
    assert registry.blobs.exists(kept)  # shared template/params/config blobs stay too
    assert registry.verify() == []
