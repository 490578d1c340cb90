"""pi0_ros for ur5e: ros2 launch pi0_bringup ur5e.launch.py [checkpoint:=DIR device:=cuda dtype:=bfloat16 sim:=true]."""

from pi0_bringup.launch_builder import robot_launch_description


def generate_launch_description():
    return robot_launch_description(default_robot="ur5e")
