"""Bags written here decode with decoders that know nothing of this suite (no graph).

The `mcap` and `mcap-ros2-support` libraries (what Foxglove's Python tooling
uses) decode each message from the schema stored in the file alone; the result
must equal what rclpy serialized. The action's feedback topic is checked with
rosbags' parser instead: mcap-ros2-support rejects every schema named like
rosbag2 names that topic's type (see docs/bags.md, "Storage").
"""

import array
import dataclasses
from typing import Any

import numpy as np
from bag_samples import T0, action_chunk, image, joint_state, policy_status
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rclpy.serialization import serialize_message
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from test_bag_definitions import SUITE_MESSAGE_TYPES

from pi0_msgs.action import ExecuteInstruction
from pi0_ros.bag import BagWriter
from pi0_ros.bag.interfaces import message_class, type_name_of

FEEDBACK_TOPIC = "/execute_instruction/_action/feedback"


def samples() -> dict[str, Any]:
    """One message of every type the suite records, with the sample values where the tests have some."""
    filled = {type_name_of(m): m for m in (action_chunk(3), image(2), joint_state(5), policy_status(4))}
    return {
        f"/topic_{index}": filled.get(msgtype) or message_class(msgtype)()
        for index, msgtype in enumerate(SUITE_MESSAGE_TYPES)
    }


def plain(value: Any) -> Any:
    """A message as nested dicts and lists, from rclpy, mcap-ros2-support or rosbags alike."""
    if hasattr(value, "get_fields_and_field_types"):  # rclpy
        return {name: plain(getattr(value, name)) for name in value.get_fields_and_field_types()}
    if hasattr(value, "__slots__") and hasattr(value, "_type"):  # mcap-ros2-support
        return {name: plain(getattr(value, name)) for name in value.__slots__}
    if dataclasses.is_dataclass(value):  # rosbags, whose fields include the constants and __msgtype__
        return {
            f.name: plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name.islower() and not f.name.startswith("__")
        }
    if isinstance(value, (bytes, bytearray, list, tuple, array.array, np.ndarray)):
        return [plain(item) for item in value]
    return value.item() if isinstance(value, np.generic) else value


def test_every_message_topic_decodes_with_mcap_ros2_from_its_stored_schema(tmp_path):
    written = samples()
    with BagWriter(tmp_path / "bag") as bag:
        for offset, (topic, message) in enumerate(written.items()):
            bag.write(topic, message, T0 + offset)
    decoded = {}
    with open(tmp_path / "bag" / "bag.mcap", "rb") as stream:
        for schema, channel, _, message in make_reader(
            stream, decoder_factories=[DecoderFactory()]
        ).iter_decoded_messages():
            assert (schema.name, schema.encoding) == (type_name_of(written[channel.topic]), "ros2msg")
            decoded[channel.topic] = plain(message)
    assert decoded == {topic: plain(message) for topic, message in written.items()}


def test_the_action_feedback_is_stored_as_rosbag2_names_it_with_a_self_contained_definition(tmp_path):
    feedback = ExecuteInstruction.Impl.FeedbackMessage()
    feedback.goal_id.uuid = np.arange(16, dtype=np.uint8)
    feedback.feedback.phase = ExecuteInstruction.Feedback.PHASE_RUNNING
    feedback.feedback.chunks_generated = 7
    feedback.feedback.observation_age_ms = 12.5
    with BagWriter(tmp_path / "bag") as bag:
        bag.write(FEEDBACK_TOPIC, feedback, T0)
    with open(tmp_path / "bag" / "bag.mcap", "rb") as stream:
        schema, channel, message = next(make_reader(stream).iter_messages())
    # rosbag2 takes a topic's type from its schema's name, so the name must be the type itself.
    msgtype = "pi0_msgs/action/ExecuteInstruction_FeedbackMessage"
    assert (channel.topic, schema.name, schema.encoding) == (FEEDBACK_TOPIC, msgtype, "ros2msg")
    assert message.data == serialize_message(feedback)
    typestore = get_typestore(Stores.EMPTY)
    typestore.register(get_types_from_msg(schema.data.decode(), msgtype))
    assert plain(typestore.deserialize_cdr(message.data, msgtype)) == plain(feedback)
