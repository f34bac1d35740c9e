"""A missing extra is named with the install that adds it: the clone's own editable install in
a checkout (as `make setup` made it), the package's extra elsewhere."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from chaos.lab import extras

ROOT = Path(__file__).resolve().parents[3]


def test_in_a_checkout_the_hint_is_this_interpreters_editable_install_of_it() -> None:
    assert extras.install_hint(extras.TLS) == f"{sys.executable} -m pip install -e '{ROOT}[tls]'"


def test_outside_a_checkout_the_hint_is_the_packages_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extras, "_CHECKOUT", tmp_path)
    assert extras.install_hint(extras.LOCUST) == "pip install 'herdlab[locust]'"


@pytest.mark.parametrize(
    ("extra", "purpose", "named"),
    [
        (extras.TLS, "TLS", "cryptography"),
        (extras.PROTO, "--proto", "grpcio-tools"),
        (extras.LOCUST, "--workers", "Locust"),
    ],
)
def test_a_missing_extra_is_one_line_naming_what_needs_it_and_the_install(
    monkeypatch: pytest.MonkeyPatch, extra: str, purpose: str, named: str
) -> None:
    monkeypatch.setattr(extras, "installed", lambda wanted: wanted != extra)
    with pytest.raises(extras.MissingExtra) as raised:
        extras.require(extra, purpose)
    message = str(raised.value)
    assert message.startswith(f"{purpose} needs {named}, which is not installed: ")
    assert message.endswith(extras.install_hint(extra)) and "\n" not in message
