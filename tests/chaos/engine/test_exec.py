"""The `exec` action on its own: a command past its timeout is killed with its process group and
the step says so, with the output it had written."""

from __future__ import annotations

from chaos.engine.actions.exec import Exec


def test_a_command_past_its_timeout_is_killed_and_said_to_have_timed_out() -> None:
    action = Exec.parse(["--timeout", "200ms", "sh", "-c", "echo started; sleep 30"])
    assert isinstance(action, Exec)
    done = action._run()
    assert (done["exit"], done["timed_out"], done["output"]) == (-9, True, "started\n")
    assert done["seconds"] < 30


def test_the_command_is_every_word_after_the_options_its_own_included() -> None:
    assert Exec.parse(["docker", "kill", "api"]) == Exec(60.0, ("docker", "kill", "api"))
    action = Exec.parse(["--timeout", "1s", "curl", "--timeout", "5", "http://127.0.0.1:1/"])
    assert action == Exec(1.0, ("curl", "--timeout", "5", "http://127.0.0.1:1/"))


def test_a_command_that_cannot_start_is_said_so() -> None:
    action = Exec.parse(["/nonexistent/command"])
    assert isinstance(action, Exec)
    done = action._run()
    assert done["exit"] is None and done["error"]
