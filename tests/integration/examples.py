"""The examples in `tsp --help` and each subcommand's help, as the tests execute them."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

import click

from tsp_mlflow.cli import cli

ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


@dataclass(frozen=True)
class Example:
    command: str  # "tsp", "tsp runs reap", ...: whose help shows it
    line: str  # as printed (a trailing "# ..." is a comment)

    def argv(self, substitutions: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """(environment assignments, words), placeholders replaced."""
        line = self.line
        for placeholder, value in substitutions.items():
            line = line.replace(placeholder, value)
        assert "<" not in line, f"no value for a placeholder in {self.line!r}"
        words = shlex.split(line, comments=True)
        env = {}
        while words and ENV_ASSIGNMENT.match(words[0]):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        return env, words


def _commands(group: click.Command, path: str) -> Iterator[tuple[str, click.Command]]:
    yield path, group
    if isinstance(group, click.Group):
        for name, sub in group.commands.items():
            yield from _commands(sub, f"{path} {name}")


def help_examples() -> list[Example]:
    """Every example line of every help text: the lines of the ``Examples:`` block (and of
    a block that follows it, e.g. "Multi-process training") that run a command."""
    found = []
    for path, command in _commands(cli, "tsp"):
        text = command.help or ""
        if "Examples:" not in text:
            continue
        for raw in text.split("Examples:", 1)[1].splitlines():
            words = shlex.split(raw, comments=True)
            if not words:
                continue
            first = next((w for w in words if not ENV_ASSIGNMENT.match(w)), "")
            if first in ("tsp", "torchrun") and "..." not in words:
                found.append(Example(path, raw.strip()))
    return found


def examples_of(command: str) -> list[Example]:
    return [e for e in help_examples() if e.command == command]
