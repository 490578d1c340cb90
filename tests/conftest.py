"""Suite-wide test setup: DDS isolation and marker handling.

Every pytest run talks on its own ROS_DOMAIN_ID and stays on localhost, so that
parallel runs, leftover processes and real robots on the network never see the
test traffic. This runs before any test module imports rclpy.
"""

import os
import random

import pytest

_domain_id = os.environ.get("PI0_TEST_ROS_DOMAIN_ID") or str(random.SystemRandom().randint(1, 101))
os.environ["ROS_DOMAIN_ID"] = _domain_id
if os.environ.get("ROS_DISTRO") == "humble":
    os.environ["ROS_LOCALHOST_ONLY"] = "1"
else:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


def pytest_report_header(config):
    return f"ROS_DOMAIN_ID={_domain_id} (set PI0_TEST_ROS_DOMAIN_ID to choose)"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def ros_graph():
    """A real rclpy context with a spinning executor; nodes added to it are destroyed afterwards."""
    from support.ros_graph import RosGraph

    graph = RosGraph()
    yield graph
    graph.shutdown()
