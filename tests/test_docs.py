"""The docs match the code: every command is in the README with help text; every setting is documented;
the README, the quickstart and the deployment guide link to files and headings that exist."""
import re
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


# -- links: what README.md, docs/quickstart.md and docs/deployment.md point at exists ------------------

LINKED_DOCS = [ROOT / "README.md", ROOT / "docs" / "quickstart.md", ROOT / "docs" / "deployment.md"]
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def github_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation but - and _ dropped,
    spaces as -, a repeated heading -1, -2, ..."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(path: Path):
    for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", path.read_text())):
        if not re.match(r"[a-z]+:", target):
            yield target


@pytest.mark.parametrize("doc", LINKED_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_of_the_doc_resolves_anchors_too(doc):
    broken = []
    for target in relative_links(doc):
        name, _, anchor = target.partition("#")
        file = (doc.parent / name).resolve() if name else doc
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in github_anchors(file):
            broken.append(target)
    assert broken == [], f"{doc.name}: links to nothing"


def test_the_link_check_sees_a_broken_anchor():
    assert "several-processes-on-one-machine---workers-n" in github_anchors(ROOT / "docs" / "deployment.md")
    assert "no-such-heading" not in github_anchors(ROOT / "docs" / "deployment.md")


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start: end if end != -1 else None]


def test_readme_documentation_list_links_every_doc():
    listed = set(re.findall(r"\]\(docs/([\w.-]+\.md)\)", section(README, "Documentation")))
    assert sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name not in listed) == []


def test_readme_layout_names_every_module_and_firmware_file():
    layout = section(README, "Layout")
    files = [p.relative_to(ROOT) for p in (ROOT / "service").rglob("*.py") if p.name != "__init__.py"]
    files += [p.relative_to(ROOT) for p in (ROOT / "firmware").glob("*.py")]
    assert [str(f) for f in files if not re.search(rf"(?<![\w.]){re.escape(f.name)}\b", layout)] == []


def test_readme_flash_row_names_every_firmware_file_it_copies():
    row = next(line for line in README.splitlines() if line.startswith("| `tswarm flash NAME --port DEVICE --wifi-ssid"))
    assert [p.name for p in (ROOT / "firmware").glob("*.py") if f"`{p.name}`" not in row] == []
