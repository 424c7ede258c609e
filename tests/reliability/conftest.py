import pytest


def pytest_collection_modifyitems(items):
    """Everything in this folder is the reliability suite (`make reliability`), marked here once."""
    for item in items:
        if "tests/reliability/" in item.nodeid:
            item.add_marker(pytest.mark.reliability)
