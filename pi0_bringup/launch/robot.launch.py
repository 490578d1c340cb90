"""pi0_ros for any robot description: ros2 launch pi0_bringup robot.launch.py robot:=<name or YAML path>."""

from pi0_bringup.launch_builder import robot_launch_description


def generate_launch_description():
    return robot_launch_description()
