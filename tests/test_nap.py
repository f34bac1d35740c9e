from chaos.cli.verbs import COMMANDS
from chaos.engine.registry import ACTIONS


def test_a_toy_action_is_a_verb_and_a_timeline_step() -> None:
    assert "nap" in {c.name for c in COMMANDS}
    assert ACTIONS.get("nap").parse(["10ms"]).seconds == 0.01
