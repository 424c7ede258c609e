"""`make test-fast` leaves out Prefect tests by their marker, which tests/conftest.py sets from the fixture."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import pytest_collection_modifyitems

ROOT = Path(__file__).resolve().parents[1]


class _Item:
    def __init__(self, fixturenames: list[str]):
        self.fixturenames = fixturenames
        self.markers: list[str] = []

    def add_marker(self, mark) -> None:
        self.markers.append(mark.name)


def test_a_test_using_the_prefect_harness_is_marked_prefect_and_others_are_not():
    direct, indirect, plain = _Item(["prefect_harness"]), _Item(["tmp_path", "served", "prefect_harness"]), _Item(["ws"])
    pytest_collection_modifyitems(None, [direct, indirect, plain])
    assert (direct.markers, indirect.markers, plain.markers) == (["prefect"], ["prefect"], [])


def test_make_test_fast_skips_prefect_slow_and_reliability_tests():
    target = re.search(r"^test-fast:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    expression = re.search(r'-m "([^"]+)"', target).group(1)
    assert {"not prefect", "not slow", "not reliability"} <= {t.strip() for t in expression.split(" and ")}


@pytest.fixture
def _uses_tmp_path(tmp_path):
    return tmp_path


def test_pytest_lists_the_fixtures_of_fixtures(_uses_tmp_path, request):
    # what the hook relies on: item.fixturenames is the closure, so a test reaching the harness through another
    # fixture is marked too
    assert {"_uses_tmp_path", "tmp_path", "tmp_path_factory"} <= set(request.node.fixturenames)
