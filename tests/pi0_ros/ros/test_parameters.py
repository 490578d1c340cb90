"""Typed parameters: declared once from a frozen dataclass, read back as an instance of it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
from rclpy.parameter import Parameter

from pi0_ros.ros.parameters import DeclaredParameters, ParameterError, declare_and_read, param, parameter_specs


def _even(value: int) -> str | None:
    return None if value % 2 == 0 else f"{value} is odd"


@dataclass(frozen=True)
class Example:
    rate_hz: float = param(10.0, "A rate.", range=(1.0, 100.0))
    mode: str = param("fast", "A mode.", choices=("fast", "slow"))
    depth: int = param(2, "An even depth.", range=(0, 10), check=_even)
    enabled: bool = param(True, "A switch.", read_only=True)
    low_s: float = param(0.1, "Lower bound.", range=(0.0, 1.0))
    high_s: float = param(0.5, "Upper bound.", range=(0.0, 1.0))

    def parameter_problems(self) -> list[str]:
        return [] if self.low_s < self.high_s else [f"low_s ({self.low_s}) must be below high_s ({self.high_s})"]


def node_with(ros_graph, name: str, **overrides):
    return ros_graph.node(name, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])


def test_a_dataclass_field_declared_with_param_keeps_its_default():
    assert Example() == Example(10.0, "fast", 2, True, 0.1, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Example().rate_hz = 1.0  # type: ignore[misc]


def test_defaults_are_declared_with_descriptors_and_read_back_typed(ros_graph):
    node = ros_graph.node("typed_defaults")
    values = declare_and_read(node, Example)
    assert values == Example()
    described = {d.name: d for d in node.describe_parameters([f.name for f in dataclasses.fields(Example)])}
    rate = described["rate_hz"].floating_point_range[0]
    assert (rate.from_value, rate.to_value) == (1.0, 100.0)
    assert described["depth"].integer_range[0].to_value == 10
    assert described["mode"].description == "A mode. One of: fast, slow."
    assert described["enabled"].read_only and not described["rate_hz"].read_only


def test_overrides_come_back_as_typed_fields(ros_graph):
    node = node_with(ros_graph, "typed_overrides", rate_hz=50.0, mode="slow", depth=4, enabled=False)
    values = declare_and_read(node, Example)
    assert isinstance(values, Example)
    assert (values.rate_hz, values.mode, values.depth, values.enabled) == (50.0, "slow", 4, False)


def test_a_value_of_the_wrong_type_is_refused_by_name_not_in_the_constructor(ros_graph):
    node = node_with(ros_graph, "typed_wrong_type", rate_hz=50)
    declared = DeclaredParameters(node, Example)  # a bad override does not raise here
    with pytest.raises(ParameterError, match="invalid parameters: rate_hz: .*INTEGER"):
        declared.read()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"mode": "medium"}, "mode: 'medium' is not one of fast, slow"),
        ({"rate_hz": 500.0}, "rate_hz: Invalid parameter value (500.0)"),  # refused against the descriptor's range
        ({"depth": 3}, "depth: 3 is odd"),
        ({"rate_hz": "fast"}, "rate_hz"),
        ({"low_s": 0.9}, "low_s (0.9) must be below high_s (0.5)"),
    ],
)
def test_bad_values_are_refused_with_the_parameter_named(ros_graph, overrides, message):
    node = node_with(ros_graph, "typed_refused", **overrides)
    with pytest.raises(ParameterError, match="invalid parameters: ") as raised:
        declare_and_read(node, Example)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_every_problem_is_listed_in_one_message(ros_graph):
    node = node_with(ros_graph, "typed_all_problems", mode="medium", depth=12)
    with pytest.raises(ParameterError) as raised:
        DeclaredParameters(node, Example).read()
    message = str(raised.value)
    assert "mode: 'medium' is not one of" in message and "depth: Invalid parameter value (12)" in message


def test_a_yaml_parameters_file_reaches_the_typed_field(ros_graph, tmp_path):
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text("/**/typed_yaml:\n  ros__parameters:\n    rate_hz: 25.0\n    mode: slow\n")
    node = ros_graph.node("typed_yaml", cli_args=["--ros-args", "--params-file", str(tuning)])
    values = declare_and_read(node, Example)
    assert (values.rate_hz, values.mode, values.depth) == (25.0, "slow", 2)


def test_parameter_specs_follow_the_fields():
    specs = parameter_specs(Example)
    assert [s.name for s in specs] == [f.name for f in dataclasses.fields(Example)]
    mode = specs[1]
    assert mode.choices == ("fast", "slow") and mode.problem("slow") is None


def test_a_field_without_param_or_a_default_outside_the_choices_is_a_programming_error():
    @dataclass(frozen=True)
    class Plain:
        rate_hz: float = 1.0

    with pytest.raises(TypeError, match="Plain.rate_hz is not declared with param"):
        parameter_specs(Plain)
    with pytest.raises(ValueError, match="not one of the choices"):
        param("medium", "A mode.", choices=("fast", "slow"))


def test_the_nodes_parameters_take_their_defaults_from_the_component_settings():
    from pi0_ros.policy.model_settings import ModelSettings
    from pi0_ros.policy.observation_sync import SyncLimits
    from pi0_ros.policy.parameters import PolicyParameters
    from pi0_ros.streamer.command_stream import StreamConfig
    from pi0_ros.streamer.node import StreamerParameters

    policy = PolicyParameters()
    assert policy.model_settings() == ModelSettings()
    assert policy.source_params().limits == SyncLimits()
    streamer = StreamerParameters()
    config = streamer.stream_config(0.02)
    assert config.blend_duration == StreamConfig.blend_duration == streamer.blend_duration_s
    assert PolicyParameters(compile_mode="reduce-overhead").model_settings().compile_mode == "reduce-overhead"
    assert PolicyParameters(model_type="pi05").model_settings().model_type == "pi05"


def test_the_policy_refuses_a_malformed_device_by_name(ros_graph):
    from pi0_ros.policy.parameters import PolicyParameters

    node = node_with(ros_graph, "typed_device", device="gpu0")
    with pytest.raises(ParameterError, match="device: expected cpu, cuda or cuda:N, got 'gpu0'"):
        declare_and_read(node, PolicyParameters)
