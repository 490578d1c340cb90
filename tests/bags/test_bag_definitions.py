"""Message definitions and type hashes as rosbag2 stores them, and type name handling (no graph)."""

import json
from pathlib import Path

import pytest
from ament_index_python.packages import get_package_share_directory
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from pi0_msgs.action import ExecuteInstruction
from pi0_msgs.msg import ActionChunk
from pi0_ros.bag import BagError
from pi0_ros.bag.definitions import SEPARATOR, DefinitionSource, computed_type_hash
from pi0_ros.bag.interfaces import message_class, parse_type_name, type_name_of

SUITE_MESSAGE_TYPES = (
    "pi0_msgs/msg/ActionChunk",
    "pi0_msgs/msg/PolicyStatus",
    "pi0_msgs/msg/StreamerStatus",
    "sensor_msgs/msg/Image",
    "sensor_msgs/msg/CompressedImage",
    "sensor_msgs/msg/JointState",
    "trajectory_msgs/msg/JointTrajectory",
    "std_msgs/msg/Float64MultiArray",
    "geometry_msgs/msg/TwistStamped",
    "nav_msgs/msg/Odometry",
    "diagnostic_msgs/msg/DiagnosticArray",
    "action_msgs/msg/GoalStatusArray",
    "rosgraph_msgs/msg/Clock",
)


def installed_hash(msgtype: str) -> str:
    package, namespace, name = msgtype.split("/")
    base = name.partition("_")[0]
    path = Path(get_package_share_directory(package)) / namespace / f"{base}.json"
    return next(h["hash_string"] for h in json.loads(path.read_text())["type_hashes"] if h["type_name"] == msgtype)


def test_action_chunk_definition_is_its_msg_file_followed_by_every_nested_type():
    definition = DefinitionSource().definition("pi0_msgs/msg/ActionChunk")
    own = (Path(get_package_share_directory("pi0_msgs")) / "msg" / "ActionChunk.msg").read_text()
    sections = definition.text.split(SEPARATOR + "\n")
    assert sections[0].rstrip("\n") == own.rstrip("\n")
    headers = [s.splitlines()[0] for s in sections[1:]]
    assert headers == ["MSG: std_msgs/Header", "MSG: builtin_interfaces/Time", "MSG: builtin_interfaces/Duration"]


@pytest.mark.parametrize("msgtype", SUITE_MESSAGE_TYPES)
def test_stored_definition_reproduces_the_installed_type_hash(msgtype):
    # The hash rosidl generated for the installed type, and the one recomputed from the
    # definition text the bag stores, agree: readers that decode from it see the real type.
    definition = DefinitionSource().definition(msgtype)
    assert definition.type_hash == installed_hash(msgtype)
    assert computed_type_hash(msgtype, definition.text) == definition.type_hash


def test_action_feedback_topic_type_is_defined_from_the_action_file():
    msgtype = "pi0_msgs/action/ExecuteInstruction_FeedbackMessage"
    definition = DefinitionSource().definition(msgtype)
    assert definition.type_hash == installed_hash(msgtype)
    assert definition.text.startswith(
        "unique_identifier_msgs/UUID goal_id\npi0_msgs/ExecuteInstruction_Feedback feedback"
    )
    assert "MSG: pi0_msgs/ExecuteInstruction_Feedback\n" in definition.text
    assert "uint8 PHASE_RUNNING" in definition.text and "observation_age_ms" in definition.text
    typestore = get_typestore(Stores.EMPTY)
    typestore.register(get_types_from_msg(definition.text, msgtype))
    fields = [name for name, _ in typestore.fielddefs[msgtype][1]]
    assert fields == ["goal_id", "feedback"]


@pytest.mark.parametrize(
    "msgtype, message",
    [
        ("no_such_msgs/msg/Thing", "package 'no_such_msgs' is not installed"),
        ("std_msgs/msg/NoSuchType", "cannot read"),
        ("pi0_msgs/action/ExecuteInstruction_SendGoal_Request", "not a message derived from an action"),
        ("not a type", "not a ROS interface type name"),
    ],
)
def test_missing_definitions_are_bag_errors(msgtype, message):
    with pytest.raises(BagError, match=message):
        DefinitionSource().definition(msgtype)


def test_type_names_and_classes_round_trip_including_action_derived_types():
    assert str(parse_type_name("std_msgs/String")) == "std_msgs/msg/String"
    assert type_name_of(ActionChunk()) == "pi0_msgs/msg/ActionChunk"
    feedback = ExecuteInstruction.Impl.FeedbackMessage
    assert type_name_of(feedback) == "pi0_msgs/action/ExecuteInstruction_FeedbackMessage"
    assert message_class("pi0_msgs/action/ExecuteInstruction_FeedbackMessage") is feedback
    assert message_class("pi0_msgs/msg/ActionChunk") is ActionChunk


@pytest.mark.parametrize("msgtype", ["no_such_msgs/msg/Thing", "std_msgs/msg/NoSuchType"])
def test_unknown_message_classes_are_bag_errors(msgtype):
    with pytest.raises(BagError, match="unknown message type"):
        message_class(msgtype)
