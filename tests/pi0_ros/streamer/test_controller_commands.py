import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Twist, TwistStamped
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from pi0_ros.core.robot_description import load_robot_description
from pi0_ros.streamer.controller_commands import ControllerCommandBuilder
from support.robots import ROBOTS_DIR

ROBOTS = ROBOTS_DIR


def test_mobile_aloha_commands_split_into_one_message_per_controller():
    description = load_robot_description(ROBOTS / "mobile_aloha.yaml")
    builder = ControllerCommandBuilder(description, point_period=0.02)
    commands = np.arange(3 * 16, dtype=float).reshape(3, 16)  # [points, dims]
    messages = dict((c.name, m) for c, m in builder.messages(Time(sec=5, nanosec=7), commands))
    assert set(messages) == {
        "left_arm_controller",
        "left_gripper_controller",
        "right_arm_controller",
        "right_gripper_controller",
        "base_controller",
    }

    left_arm = messages["left_arm_controller"]
    assert isinstance(left_arm, JointTrajectory)
    assert (left_arm.header.stamp.sec, left_arm.header.stamp.nanosec) == (5, 7), "absolute stamp, never 0"
    assert left_arm.joint_names[0] == "left_waist" and len(left_arm.joint_names) == 6
    assert [list(p.positions) for p in left_arm.points] == [list(commands[k, :6]) for k in range(3)]
    times = [p.time_from_start.nanosec for p in left_arm.points]
    assert times == [0, 20_000_000, 40_000_000], "strictly increasing, one period apart"

    gripper = messages["right_gripper_controller"]
    assert isinstance(gripper, Float64MultiArray) and list(gripper.data) == [commands[0, 13]]

    base = messages["base_controller"]
    assert isinstance(base, TwistStamped)
    assert (base.twist.linear.x, base.twist.angular.z) == (commands[0, 14], commands[0, 15])


def test_unstamped_base_controller_gets_twist(tmp_path):
    text = (ROBOTS / "mobile_aloha.yaml").read_text().replace("stamped: true", "stamped: false")
    path = tmp_path / "humble_mobile_aloha.yaml"
    path.write_text(text)
    description = load_robot_description(path)
    assert description.base.controller.topic == "base_controller/cmd_vel_unstamped"
    builder = ControllerCommandBuilder(description, point_period=0.02)
    base = dict((c.name, m) for c, m in builder.messages(Time(), np.zeros((2, 16))))["base_controller"]
    assert type(base) is Twist


def test_a_single_point_is_refused():
    description = load_robot_description(ROBOTS / "ur5e.yaml")
    with pytest.raises(ValueError, match="points>=2"):
        ControllerCommandBuilder(description, 0.02).messages(Time(), np.zeros((1, 7)))
