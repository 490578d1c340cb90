"""pi0_ros for mobile_aloha:

ros2 launch pi0_bringup mobile_aloha.launch.py [checkpoint:=DIR device:=cuda dtype:=bfloat16 sim:=true]
"""

from pi0_bringup.launch_builder import robot_launch_description


def generate_launch_description():
    return robot_launch_description(default_robot="mobile_aloha")
