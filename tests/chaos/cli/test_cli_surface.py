"""Every command, option, env var and choice that was documented stays: users' scripts call them.

`data/cli_surface.json` was read from the CLI before `chaos/` was rebuilt in layers; the
surface may grow (a new command, option or choice), never shrink. Regenerate it only for an
intended addition: `python tests/chaos/cli/cli_surface.py > tests/chaos/cli/data/cli_surface.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

from cli_surface import PROGRAMS, surface
from click.testing import CliRunner

RECORDED = Path(__file__).parent / "data" / "cli_surface.json"


def test_no_command_option_env_var_or_choice_is_gone() -> None:
    recorded = json.loads(RECORDED.read_text())
    now = surface()
    missing = []
    for command, params in recorded.items():
        if command not in now:
            missing.append(f"command {command!r}")
            continue
        for opt, doc in params.items():
            have = now[command].get(opt)
            if have is None:
                missing.append(f"{command} {opt}")
                continue
            for field in ("kind", "envvar", "flag", "multiple"):
                if doc.get(field) != have.get(field):
                    missing.append(
                        f"{command} {opt}: {field} {doc.get(field)} -> {have.get(field)}"
                    )
            if not set(doc["opts"]) <= set(have["opts"]):
                missing.append(f"{command} {opt}: spellings {doc['opts']} -> {have['opts']}")
            if not set(doc.get("choices", ())) <= set(have.get("choices", ())):
                missing.append(
                    f"{command} {opt}: choices {doc['choices']} -> {have.get('choices')}"
                )
    assert missing == []


def test_every_command_prints_its_help() -> None:
    runner = CliRunner()
    for path in surface():
        program = next(name for name in PROGRAMS if path == name or path.startswith(name + " "))
        words = path[len(program) :].split()
        result = runner.invoke(PROGRAMS[program], [*words, "--help"])
        assert result.exit_code == 0, (path, result.output)
