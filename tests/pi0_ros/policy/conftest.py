import pytest
from rclpy.lifecycle import TransitionCallbackReturn

from support.policy_harness import Harness, make_policy_node


@pytest.fixture
def active_policy(ros_graph):
    """Makes a configured, active policy node with its test peer: `active_policy(sensors=..., **parameters)`."""
    made = []

    def make(sensors=True, **params):
        policy = make_policy_node(ros_graph, **params)
        assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert policy.trigger_activate() == TransitionCallbackReturn.SUCCESS
        made.append(Harness(ros_graph, policy, sensors=sensors))
        return made[-1]

    yield make
    for harness in made:
        harness.client.destroy()
