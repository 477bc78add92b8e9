"""The test suite's own rules (tests/conftest.py), checked so that they stay."""
from hypothesis import settings


def test_hypothesis_examples_have_no_deadline_so_a_loaded_machine_does_not_fail_them():
    assert settings().deadline is None
