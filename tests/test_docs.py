"""The docs match the code: every command is in the README with help text; every setting is documented."""
from pathlib import Path

import click
import pytest

from tswarm.cli import cli
from tswarm.settings import SETTINGS, settings_markdown

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def walk(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        path = prefix + (name,)
        if isinstance(command, click.Group):
            yield from walk(command, path)
        else:
            yield path, command


COMMANDS = list(walk(cli))


@pytest.mark.parametrize("path, command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_has_help_and_is_in_the_readme(path, command):
    assert command.help and command.help.strip(), f"tswarm {' '.join(path)} has no help text"
    assert f"tswarm {' '.join(path)}" in README, f"README.md does not mention `tswarm {' '.join(path)}`"


def test_readme_shows_make_run_and_make_test_first():
    head = README[: README.index("## ")]
    assert "make run" in head and "make test" in head


def test_configuration_doc_holds_the_settings_table_as_generated():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert settings_markdown() in doc, "docs/configuration.md is stale: paste `tswarm settings --markdown` into it"


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.name for s in SETTINGS])
def test_every_setting_has_help(setting):
    assert setting.name.startswith("TSWARM_") and setting.help.endswith(".")


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
