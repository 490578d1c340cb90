import copy

import pytest
import yaml

from pi0_ros.core.robot_description import (
    PI0_IMAGE_SLOTS,
    DescriptionError,
    load_robot_description,
    parse_robot_description,
)
from pi0_ros.policy.model_adaptations import check_model_adaptations
from support.robots import ROBOT_NAMES, robot_yaml


def raw(name="ur5e"):
    return yaml.safe_load(robot_yaml(name).read_text())


@pytest.mark.parametrize("name", ROBOT_NAMES)
def test_every_shipped_description_is_valid_and_self_consistent(name):
    description = load_robot_description(robot_yaml(name))
    assert description.name == name and description.source == robot_yaml(name)
    assert set(description.policy.state) <= set(description.joint_names)
    assert set(description.joint_names) <= set(description.policy.actions)
    assert 1 <= len(description.policy_cameras) <= 3
    assert [c.slot for c in description.policy_cameras] == [
        s for s in PI0_IMAGE_SLOTS if s in {c.slot for c in description.cameras}
    ]
    for joint in description.joints:
        assert joint.lower <= joint.home <= joint.upper and joint.max_velocity > 0


def test_robot_specific_facts():
    aloha = load_robot_description(robot_yaml("aloha"))
    assert len(aloha.policy.actions) == 14 and aloha.control_rate_hz == 50
    assert [c.name for c in aloha.cameras] == ["cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist"]
    assert aloha.joint_names[:7] == (
        "left_waist",
        "left_shoulder",
        "left_elbow",
        "left_forearm_roll",
        "left_wrist_angle",
        "left_wrist_rotate",
        "left_gripper",
    )
    assert aloha.policy.transforms == ("aloha",)
    mobile = load_robot_description(robot_yaml("mobile_aloha"))
    assert len(mobile.policy.actions) == 16 and mobile.policy.actions[-2:] == ("base_linear_x", "base_angular_z")
    assert "cam_low" not in [c.name for c in mobile.cameras] and len(mobile.policy.state) == 14
    assert mobile.base.controller.topic == "base_controller/cmd_vel"
    ur5e = load_robot_description(robot_yaml("ur5e"))
    assert ur5e.joint_groups[0].controller.name == "scaled_joint_trajectory_controller"
    assert ur5e.joint_groups[0].controller.topic == "scaled_joint_trajectory_controller/joint_trajectory"
    franka = load_robot_description(robot_yaml("franka"))
    assert franka.joint_names[:7] == tuple(f"fr3_joint{i}" for i in range(1, 8))


def mutate(change, name="ur5e"):
    data = raw(name)
    change(data)
    return data


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda d: d.setdefault("policy", {}).update(state=["shoulder_pan_joint", "elbow_jont"]),
            "unknown joint(s): elbow_jont",
        ),
        (lambda d: d["cameras"].append({"name": "wrist_camera", "slot": None}), "duplicate camera 'wrist_camera'"),
        (
            lambda d: d["joint_groups"][0]["joints"][1].pop("upper"),
            "joint 'shoulder_lift_joint': missing limit 'upper'",
        ),
        (lambda d: d["joint_groups"][0]["joints"][0].update(lower=1.0, upper=-1.0), "lower limit 1.0 must be below"),
        (lambda d: d["joint_groups"][0]["joints"][0].update(home=9.0), "home 9.0 lies outside"),
        (lambda d: d["joint_groups"][0]["joints"][0].update(max_velocity=0), "max_velocity must be positive"),
        (
            lambda d: d["joint_groups"][1]["joints"].append(dict(d["joint_groups"][0]["joints"][0])),
            "duplicate joint 'shoulder_pan_joint'",
        ),
        (lambda d: d["cameras"][0].update(slot="top_rgb"), "unknown pi0 slot 'top_rgb'"),
        (lambda d: d["cameras"][1].update(slot="base_0_rgb"), "two cameras map to the same pi0 slot"),
        (lambda d: d["joint_groups"][0]["controller"].update(interface="effort"), "unknown interface 'effort'"),
        (lambda d: d.update(control_rate_hz=5000), "control_rate_hz must be within"),
        (lambda d: d.update(colour="blue"), "unknown key(s) colour"),
        (lambda d: d.setdefault("policy", {}).update(actions=["shoulder_pan_joint"]), "must command every joint"),
        (lambda d: d.setdefault("policy", {}).update(action_rate_hz=100), "action_rate_hz must be within"),
    ],
)
def test_broken_descriptions_name_the_problem(change, message):
    with pytest.raises(DescriptionError) as error:
        parse_robot_description(mutate(change))
    assert message in str(error.value)


def test_templates_describe_identical_arms_once():
    data = raw("aloha")
    data["joint_groups"][0]["template"] = "vx301"
    with pytest.raises(DescriptionError, match="unknown joint template 'vx301'"):
        parse_robot_description(data)
    with_both = copy.deepcopy(raw("aloha"))
    with_both["joint_groups"][0]["joints"] = []
    with pytest.raises(DescriptionError, match="either 'joints' or 'template'"):
        parse_robot_description(with_both)


def test_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(DescriptionError, match="cannot read robot description .*missing.yaml"):
        load_robot_description(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed")
    with pytest.raises(DescriptionError, match="broken.yaml: invalid YAML"):
        load_robot_description(broken)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutate(lambda d: d["cameras"].clear())))
    with pytest.raises(DescriptionError, match="bad.yaml: at least one camera"):
        load_robot_description(bad)
    no_stats = tmp_path / "no_stats.yaml"
    no_stats.write_text(yaml.safe_dump(mutate(lambda d: d.setdefault("policy", {}).update(norm_stats="stats.json"))))
    with pytest.raises(DescriptionError, match=f"policy.norm_stats: {tmp_path}/stats.json does not exist"):
        load_robot_description(no_stats)
    (tmp_path / "stats.json").write_text("{}")
    assert load_robot_description(no_stats).norm_stats_path() == tmp_path / "stats.json"


@pytest.mark.parametrize(
    "transforms, message",
    [
        (["bogus"], "policy.transforms: unknown transform 'bogus'"),
        (["aloha"], "reads 14 dims but the robot has"),
    ],
)
def test_model_adaptations_are_checked_against_pi0_model(transforms, message):
    description = parse_robot_description(mutate(lambda d: d.setdefault("policy", {}).update(transforms=transforms)))
    with pytest.raises(DescriptionError) as error:
        check_model_adaptations(description)
    assert message in str(error.value)


def test_shipped_robots_name_their_openpi_family():
    families = {name: load_robot_description(robot_yaml(name)).openpi.family for name in ROBOT_NAMES}
    assert families == {"aloha": "aloha", "mobile_aloha": "aloha", "franka": "droid", "ur5e": "libero"}
    aloha = load_robot_description(robot_yaml("aloha")).observation_format()
    assert aloha.cameras == {name: name for name in ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")}
    franka = load_robot_description(robot_yaml("franka")).observation_format()
    assert franka.cameras["wrist_camera"] == "observation/wrist_image_left" and franka.state_dim == 8


def test_a_description_without_openpi_section_cannot_use_a_policy_server():
    description = parse_robot_description(mutate(lambda d: d.pop("openpi")))
    assert description.openpi is None
    with pytest.raises(DescriptionError, match="no 'openpi' section"):
        description.observation_format()


LIBERO_CAMERAS = {"scene_camera": "observation/image", "wrist_camera": "observation/wrist_image"}


@pytest.mark.parametrize(
    "openpi, message",
    [
        ({"family": "rt1"}, "unknown family 'rt1'"),
        ({"family": "libero", "camera": {}}, "unknown key(s) camera"),
        ({"family": "libero"}, "policy camera(s) scene_camera, wrist_camera have no libero key"),
        ({"family": "libero", "cameras": {**LIBERO_CAMERAS, "top": "observation/image"}}, "unknown camera(s) top"),
        ({"family": "libero", "cameras": {"scene_camera": "observation/image"}}, "wrist_camera have no libero key"),
        ({"family": "libero", "cameras": {**LIBERO_CAMERAS, "wrist_camera": "wrist"}}, "no camera key(s) ['wrist']"),
        ({"family": "aloha", "cameras": {"scene_camera": "cam_high", "wrist_camera": "cam_low"}}, "state of 14"),
    ],
)
def test_broken_openpi_sections_name_the_problem(openpi, message):
    with pytest.raises(DescriptionError) as error:
        parse_robot_description(mutate(lambda d: d.update(openpi=openpi)))
    assert message in str(error.value)
