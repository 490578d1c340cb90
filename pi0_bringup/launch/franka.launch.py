"""pi0_ros for franka:

ros2 launch pi0_bringup franka.launch.py [checkpoint:=DIR device:=cuda dtype:=bfloat16 sim:=true]
"""

from pi0_bringup.launch_builder import robot_launch_description


def generate_launch_description():
    return robot_launch_description(default_robot="franka")
