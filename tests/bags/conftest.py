"""Fixtures of the bag tool tests."""

import pytest


@pytest.fixture(params=["mcap", "sqlite3"])
def storage(request) -> str:
    """Both storages rosbag2 ships: MCAP (default since Iron) and sqlite3 (Humble's default)."""
    return request.param
