"""Synthetic camera images: every camera renders, views follow the robot's state, rendering is deterministic."""

import numpy as np
import pytest

from pi0_bringup.sim_render import SceneRenderer
from pi0_bringup.sim_robot import SimRobot, TrajectoryPoint
from pi0_ros.core.robot_description import load_robot_description
from support.robots import ROBOT_NAMES, robot_yaml

LEFT_ARM = ("left_waist", "left_shoulder", "left_elbow", "left_forearm_roll", "left_wrist_angle", "left_wrist_rotate")
RED_BLOCK = (210, 40, 40)


def description(name):
    return load_robot_description(robot_yaml(name))


def settled(robot_name, command=None, seconds=2.0):
    """State after `command(robot)` and `seconds` of 50 Hz steps."""
    robot = SimRobot(description(robot_name))
    robot.step(0.0)
    if command is not None:
        command(robot)
    for k in range(1, int(seconds * 50) + 1):
        robot.step(k / 50)
    return robot.state()


def move_left_arm(offsets):
    home = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])
    goal = tuple(float(v) for v in home + np.array(offsets))
    return lambda robot: robot.command_trajectory(
        "left_arm_controller", LEFT_ARM, [TrajectoryPoint(1.0, goal)], None, now=0.0
    )


def changed_fraction(a, b):
    return float(np.mean(np.any(a != b, axis=2)))


@pytest.mark.parametrize("robot_name", ROBOT_NAMES)
def test_every_camera_renders_a_scene_at_the_requested_size(robot_name):
    robot = description(robot_name)
    state = settled(robot_name, seconds=0.0)
    renderer = SceneRenderer(robot, 96, 72)
    for camera in robot.cameras:
        image = renderer.render(camera.name, state)
        assert image.shape == (72, 96, 3) and image.dtype == np.uint8
        assert renderer.image_size(camera.name) == (96, 72)
        # Sky, floor, table, blocks and the robot: far more than a flat fill.
        assert len(np.unique(image.reshape(-1, 3), axis=0)) >= 5, camera.name


def test_sizes_default_to_the_description_and_can_override_one_dimension():
    robot = description("franka")
    assert SceneRenderer(robot).image_size("scene_camera") == (640, 480)
    assert SceneRenderer(robot).render("scene_camera", settled("franka", seconds=0.0)).shape == (480, 640, 3)
    assert SceneRenderer(robot, height=100).image_size("wrist_camera") == (640, 100)
    with pytest.raises(ValueError):
        SceneRenderer(robot, width=-1)


def test_rendering_is_deterministic():
    state = settled("mobile_aloha", move_left_arm([0.3, 0.2, -0.2, 0.5, 0.3, 0.4]), seconds=0.5)
    first, second = (SceneRenderer(description("mobile_aloha"), 64, 48) for _ in range(2))
    for camera in ("cam_high", "cam_left_wrist", "cam_right_wrist"):
        np.testing.assert_array_equal(first.render(camera, state), second.render(camera, state))
        np.testing.assert_array_equal(first.render(camera, state), first.render(camera, state))


def test_the_overhead_camera_sees_the_blocks_and_the_arm_moving():
    renderer = SceneRenderer(description("aloha"), 224, 224)
    home = renderer.render("cam_high", settled("aloha", seconds=0.0))
    assert np.any(np.all(home == RED_BLOCK, axis=2)), "the red block's top face is in view"
    moved = renderer.render("cam_high", settled("aloha", move_left_arm([0.6, 0.3, 0, 0, 0, 0])))
    assert changed_fraction(home, moved) > 0.01


def test_a_wrist_camera_follows_its_own_arm_only():
    renderer = SceneRenderer(description("aloha"), 128, 96)
    home_state = settled("aloha", seconds=0.0)
    moved_state = settled("aloha", move_left_arm([0.0, 0.0, 0.0, 0.0, 0.0, 0.8]))  # wrist_rotate: rolls the view
    left_home, left_moved = (renderer.render("cam_left_wrist", s) for s in (home_state, moved_state))
    assert changed_fraction(left_home, left_moved) > 0.2
    right_home, right_moved = (renderer.render("cam_right_wrist", s) for s in (home_state, moved_state))
    np.testing.assert_array_equal(right_home, right_moved)


def test_the_gripper_opening_shows_in_the_wrist_camera():
    renderer = SceneRenderer(description("aloha"), 128, 96)
    images = [
        renderer.render(
            "cam_right_wrist",
            settled("aloha", lambda robot, v=v: robot.command_positions("right_gripper_controller", [v])),
        )
        for v in (0.0, 1.0)
    ]
    assert changed_fraction(*images) > 0.01


def test_base_motion_pans_the_body_cameras():
    renderer = SceneRenderer(description("mobile_aloha"), 128, 96)
    still = settled("mobile_aloha", seconds=0.0)

    def turn(robot):
        robot.command_base(0.0, 1.0, None, now=0.0)

    turned = settled("mobile_aloha", turn, seconds=0.4)
    assert turned.base.yaw > 0.1
    np.testing.assert_array_equal(turned.positions, still.positions)
    for camera in ("cam_high", "cam_left_wrist"):
        assert changed_fraction(renderer.render(camera, still), renderer.render(camera, turned)) > 0.05, camera
