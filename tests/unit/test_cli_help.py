"""`evflow COMMAND --help` documents each command and each of its options."""

from __future__ import annotations

import argparse

import pytest

from evflow.cli.main import build_parser, main


def commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[prefix + name] = sub
                found.update(commands(sub, prefix + name + " "))
    return found


def test_every_command_and_option_has_help() -> None:
    parser = build_parser()
    found = commands(parser)
    assert {"run", "runs", "show", "logs", "events", "emit", "trigger", "cancel", "retry"} <= set(
        found
    )
    assert {"backfill", "audit verify", "audit export", "flows", "validate", "serve"} <= set(found)
    for name, sub in found.items():
        assert sub.description, f"evflow {name} has no description"
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"evflow {name}: {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("argv", [["trigger", "--help"], ["audit", "export", "--help"]])
def test_help_prints_and_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: evflow ")
    assert "--store STORE" in out
