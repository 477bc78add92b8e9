"""The node-name rule, one definition (service/names.py) for every place a name is given."""
import subprocess
import sys

import pytest

from tswarm.names import NODE_NAME_HELP, valid_node_name


@pytest.mark.parametrize("name", ["a", "Kitchen-2", "shed_1.esp32", "0", "x" * 64])
def test_good_names(name):
    assert valid_node_name(name)


@pytest.mark.parametrize("name", ["", "-a", ".a", "_a", "a b", "../etc", "a/b", "a\x00b", "é", "x" * 65, "a\n"])
def test_bad_names(name):
    assert not valid_node_name(name)


def test_the_help_says_the_rule():
    assert NODE_NAME_HELP == "1-64 characters of A-Z a-z 0-9 _ . -, starting with a letter or digit"


def test_the_rule_and_the_registry_import_no_aiohttp():
    """The CLI's node commands and the exporter use them without the server's libraries."""
    code = "import sys, tswarm.names, tswarm.nodes; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_rule_is_written_once():
    from pathlib import Path

    import tswarm

    defining = [
        path.name for path in sorted(Path(tswarm.__file__).parent.rglob("*.py"))
        if "def valid_node_name" in (text := path.read_text()) or "NODE_NAME =" in text or "NODE_NAME_HELP =" in text
    ]
    assert defining == ["names.py"]
