"""Every command's --help: each option says what it does, and one concept has one name."""

from __future__ import annotations

import click
import pytest

from codeisland.cli import cli

# retired or ambiguous wordings -> the name used everywhere instead
RETIRED = {
    "smmemu": "the emulated board",
    "emulated machine": "the emulated board",
    "codeisland-profile": "a sample profile",
    "hot-region": "the hot region",
    "relocatable functions": "islands",
}
SELF_EXPLAINING = {"help", "json", "version"}


def _commands() -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []

    def walk(cmd: click.Command, path: str) -> None:
        out.append((path, cmd))
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd, info_name=path)
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, name
                walk(sub, f"{path} {name}")

    walk(cli, "codeisland")
    return out


COMMANDS = _commands()


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_option_says_what_it_does(path: str, cmd: click.Command) -> None:
    assert (cmd.help or "").strip(), f"{path} has no help text"
    missing = [
        p.opts[0]
        for p in cmd.params
        if isinstance(p, click.Option) and p.name not in SELF_EXPLAINING and not p.help
    ]
    assert not missing, f"{path}: options without help: {missing}"


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_one_name_per_concept(path: str, cmd: click.Command) -> None:
    text = cmd.get_help(click.Context(cmd, info_name=path)).lower()
    used = {old: new for old, new in RETIRED.items() if old in text}
    assert not used, f"{path} --help says {sorted(used)}; say {sorted(used.values())}"
