"""The toy toxic is a `chaos wire` option, a `-t` kind and a timeline word with no other code."""

from __future__ import annotations

from click.testing import CliRunner

from chaos.cli.main import cli
from chaos.engine.actions.wire import Wire


def test_the_toy_is_written_every_way() -> None:
    for words in (
        ["db", "toy=5ms", "skip=2"],
        ["db", "--toy", "5ms", "--skip", "2"],
        ["db", "-t", "toy", "-a", "toy=5ms", "-a", "skip=2"],
    ):
        action = Wire.parse(words)
        assert isinstance(action, Wire)
        assert dict(action.fault.attributes) == {"wait_ms": 5.0, "skip": 2.0}
    help_text = CliRunner().invoke(cli, ["wire", "--help"]).output
    assert "--toy DURATION" in help_text and "--skip" in help_text
