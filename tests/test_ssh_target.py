"""`jump_host` targets: ``[user@]host[:port]`` as ssh -J spells them."""

from __future__ import annotations

import pytest

from renderd.coordinator.ssh import parse_target


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("bastion.example.net", (None, "bastion.example.net", 22)),
        ("renderd@bastion.example.net:2222", ("renderd", "bastion.example.net", 2222)),
        ("10.0.0.1:22", (None, "10.0.0.1", 22)),
        ("ops@[2001:db8::1]:2200", ("ops", "2001:db8::1", 2200)),
        ("[2001:db8::1]", (None, "2001:db8::1", 22)),
        ("2001:db8::1", (None, "2001:db8::1", 22)),
    ],
)
def test_parse_target(target: str, parsed: tuple[str | None, str, int]) -> None:
    assert parse_target(target) == parsed
