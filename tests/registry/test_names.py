"""Model names and tags are validated before they touch the file system."""

from __future__ import annotations

import pytest

from astra_tune.errors import ConfigError
from astra_tune.registry.names import parse_reference, parse_version


def test_references_parse_with_latest_as_default() -> None:
    assert str(parse_reference("orrery")) == "orrery:latest"
    ref = parse_reference("team/orrery-support:1.2.0")
    assert (ref.name, ref.tag, ref.is_version) == ("team/orrery-support", "1.2.0", True)
    assert parse_reference("orrery:production").is_version is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("../etc/passwd", "at most one '/'"),
        ("../passwd", "'..'"),
        ("a/..", "'..'"),
        ("a//b", "empty"),
        ("/abs", "empty"),
        ("", "empty"),
        ("Orrery", "lowercase"),
        ("a/b/c", "at most one '/'"),
        ("x" * 65, "longer than 64"),
        ("orrery:", "invalid tag ''"),
        ("orrery:../x", "invalid tag"),
        ("orrery:" + "t" * 65, "invalid tag"),
        ("or rery", "lowercase"),
    ],
)
def test_bad_names_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_reference(text)
    assert message in str(caught.value)


def test_versions_are_semantic() -> None:
    assert parse_version("1.10.0") == (1, 10, 0)
    for bad in ("1.0", "v1.0.0", "01.0.0", "1.0.0-rc1"):
        with pytest.raises(ConfigError, match=r"MAJOR\.MINOR\.PATCH"):
            parse_version(bad)
