"""bag_evaluate on small bags written with the plain writer: results, reproducibility, and clear errors.

No ROS graph. The bags record a small robot whose joints move linearly in time,
so the recorded references are known exactly and every metric in the report
can be recomputed here from the chunks the evaluator returns.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ament_index_python.packages import get_package_share_directory
from builtin_interfaces.msg import Duration, Time
from dataset_bags import ARM_OFFSET, CAMERA_OFFSET_NS, GRIPPER_OFFSET, JOINTS, MOBILE_ROBOT_YAML, SECOND, T0
from geometry_msgs.msg import Twist, TwistStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, Header, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from pi0_model.checkpoint import save_checkpoint
from pi0_model.policy import Pi0Policy
from pi0_model.tokenizer import SENTENCEPIECE_FILE, tiny_sentencepiece_model
from pi0_msgs.msg import PolicyStatus
from pi0_ros.bag import BagError, BagReader, BagWriter, OfferedQos
from pi0_ros.bag import evaluate as evaluate_cli
from pi0_ros.bag.definitions import DefinitionSource
from pi0_ros.bag.evaluate import EvaluateConfig, evaluate_bag
from pi0_ros.bag.evaluation import COMMANDS, JOINT_STATES, SCHEMA_VERSION, Selection
from pi0_ros.bag.progress import Progress
from pi0_ros.core.robot_description import load_robot_description
from pi0_ros.policy.model_loader import demo_normalization, load_policy, robot_io
from pi0_ros.policy.model_settings import ModelSettings

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

BASE_MEASURED = (0.2, -0.1)
BASE_COMMANDED = (0.25, -0.1)


def measured(t: np.ndarray) -> dict[str, np.ndarray]:
    """The recorded joint positions at t seconds after the bag start: linear, so interpolation is exact."""
    return {"j1": 0.3 * t - 0.1, "j2": -0.2 * t + 0.4, "g": 0.5 + 0.2 * t}


def frame(index: int, camera: int) -> np.ndarray:
    rng = np.random.default_rng(1000 * camera + index)
    return rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)


def stamp(t_ns: int) -> Time:
    return Time(sec=t_ns // SECOND, nanosec=t_ns % SECOND)


def header(t_ns: int) -> Header:
    return Header(stamp=stamp(t_ns))


def image_msg(index: int, camera: int, t_ns: int) -> Image:
    rgb = frame(index, camera)
    return Image(header=header(t_ns), height=24, width=32, encoding="rgb8", step=96, data=rgb.tobytes())


@pytest.fixture
def robot_yaml(tmp_path) -> Path:
    path = tmp_path / "testbot.yaml"
    path.write_text(MOBILE_ROBOT_YAML)
    return path


def write_run(
    path: Path,
    storage: str = "mcap",
    duration_s: float = 2.0,
    camera_hz: float = 10.0,
    instructions: tuple[tuple[float, str], ...] = ((0.0, "stack the blocks"),),
    skip_topics: tuple[str, ...] = (),
    state_joints: tuple[str, ...] = JOINTS,
    gripper_values: int = 1,
    definitions: DefinitionSource | None = None,
) -> None:
    """A run of testbot: cameras, joint states at 50 Hz, base odometry, commands of every controller, status."""
    messages: list[tuple[str, int, object]] = []
    for k in range(int(round(duration_s * camera_hz)) + 1):
        t_ns = T0 + CAMERA_OFFSET_NS + round(k * SECOND / camera_hz)
        messages.append(("/front/image_raw", t_ns, image_msg(k, 0, t_ns)))
        messages.append(("/wrist/image_raw", t_ns, image_msg(k, 1, t_ns)))
    for k in range(int(round(duration_s * 50)) + 1):
        t_ns = T0 + k * 20_000_000
        values = {name: float(v) for name, v in measured(np.array((t_ns - T0) / SECOND)).items()}
        messages.append(
            (
                "/joint_states",
                t_ns,
                JointState(header=header(t_ns), name=list(state_joints), position=[values[n] for n in state_joints]),
            )
        )
        odometry = Odometry(header=header(t_ns))
        odometry.twist.twist.linear.x, odometry.twist.twist.angular.z = BASE_MEASURED
        messages.append(("/base_controller/odom", t_ns, odometry))
        point = JointTrajectoryPoint(
            positions=[values["j1"] + ARM_OFFSET, values["j2"] + ARM_OFFSET], time_from_start=Duration()
        )
        messages.append(
            (
                "/arm_controller/joint_trajectory",
                t_ns,
                JointTrajectory(header=header(t_ns), joint_names=["j1", "j2"], points=[point]),
            )
        )
        messages.append(
            (
                "/gripper_controller/commands",
                t_ns,
                Float64MultiArray(data=[values["g"] + GRIPPER_OFFSET] * gripper_values),
            )
        )
        twist = Twist()
        twist.linear.x, twist.angular.z = BASE_COMMANDED
        messages.append(("/base_controller/cmd_vel", t_ns, TwistStamped(header=header(t_ns), twist=twist)))
    for at, instruction in instructions:
        t_ns = T0 + round(at * SECOND)
        messages.append(
            (
                "/policy_status",
                t_ns,
                PolicyStatus(
                    header=header(t_ns),
                    lifecycle_state="active",
                    goal_active=True,
                    goal_id="ab" * 16,
                    instruction=instruction,
                ),
            )
        )
    messages.sort(key=lambda m: m[1])
    qos = {
        "/front/image_raw": [OfferedQos.sensor_data()],
        "/wrist/image_raw": [OfferedQos.sensor_data()],
        "/policy_status": [OfferedQos.latched()],
    }
    with BagWriter(path, storage=storage, definitions=definitions) as bag:
        for topic, t_ns, message in messages:
            if topic not in skip_topics:
                bag.write(topic, message, t_ns, offered_qos=qos.get(topic, ()))


HALF_SECOND_STRIDE = Selection(every=None, stride=0.5)


def config(
    bag: Path,
    robot_yaml: Path,
    output: Path,
    seed: int = 3,
    instruction: str | None = None,
    selection: Selection = HALF_SECOND_STRIDE,
) -> EvaluateConfig:
    return EvaluateConfig(
        bag=bag,
        description=load_robot_description(robot_yaml),
        model=ModelSettings(checkpoint="", device="cpu", dtype="float32", seed=seed),
        selection=selection,
        output=output,
        instruction=instruction,
        torch_threads=1,
    )


def expected_errors(outcome, reference: str) -> dict[str, np.ndarray]:
    """Prediction minus the exactly known recorded signal, per action, over the rows the bag covers."""
    description_names = outcome.evaluation.settings.action_names
    errors = {name: [] for name in description_names}
    for chunk in (c.chunk for c in outcome.evaluation.chunks):
        t = chunk.row_times() - T0 / SECOND
        covered = t <= 2.0
        truth = measured(t)
        if reference == COMMANDS:
            truth = {"j1": truth["j1"] + ARM_OFFSET, "j2": truth["j2"] + ARM_OFFSET, "g": truth["g"] + GRIPPER_OFFSET}
        base = BASE_COMMANDED if reference == COMMANDS else BASE_MEASURED
        truth["base_linear_x"], truth["base_angular_z"] = np.full(t.shape, base[0]), np.full(t.shape, base[1])
        for j, name in enumerate(description_names):
            errors[name].append((chunk.actions[:, j] - truth[name])[covered])
    return {name: np.concatenate(values) for name, values in errors.items()}


def test_report_metrics_match_the_recorded_trajectory_and_commands(tmp_path, robot_yaml, storage):
    write_run(tmp_path / "bag", storage)
    outcome = evaluate_bag(config(tmp_path / "bag", robot_yaml, tmp_path / "out"))
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    assert document == outcome.report
    assert document["schema_version"] == SCHEMA_VERSION and document["robot"] == "testbot"
    assert document["bag"]["storage"] == storage and document["instructions"] == ["stack the blocks"]
    # 21 camera sets (10 Hz over 2 s, both ends included); a stride of 0.5 s takes every fifth. Stamps are
    # compared to 1 us: seconds since the epoch in a float resolve about 0.24 us.
    assert document["selection"]["synchronized_observations"] == 21
    assert [c.chunk.stamp - T0 / SECOND for c in outcome.evaluation.chunks] == pytest.approx(
        [0.005, 0.505, 1.005, 1.505, 2.005], abs=1e-6
    )
    assert document["timing"]["chunks_per_s"] > 0 and document["timing"]["inference_ms"]["mean"] > 0

    for label in (JOINT_STATES, COMMANDS):
        section = document["references"][label]
        assert section["names"] == ["j1", "j2", "g", "base_linear_x", "base_angular_z"]
        for name, errors in expected_errors(outcome, label).items():
            stats = section["per_joint"][name]
            assert stats["count"] == errors.size
            # That time resolution moves a linearly interpolated reference by well under 1e-6.
            assert stats["mae"] == pytest.approx(np.mean(np.abs(errors)), abs=1e-6)
            assert stats["rmse"] == pytest.approx(np.sqrt(np.mean(errors**2)), abs=1e-6)
        assert [c["step"] for c in section["at_horizon"]] == [5, 25, 49]
    assert document["references"][COMMANDS]["topics"] == [
        "/arm_controller/joint_trajectory",
        "/gripper_controller/commands",
        "/base_controller/cmd_vel",
    ]
    # Rows past the last joint state (2.0 s) have no reference: the last chunk has none at all, and
    # only the first three reach their last row (0.98 s ahead) inside the bag.
    counts = document["references"][JOINT_STATES]["per_step"]["count"]
    assert counts[0] == 4 * 5 and counts[-1] == 3 * 5

    # Chunks 0.5 s apart overlap (1 s horizon): four hand-overs, each jump recomputed from the chunks.
    chunks = [c.chunk for c in outcome.evaluation.chunks]
    jumps = [np.max(np.abs(chunks[i].actions[0] - chunks[i - 1].actions[25])) for i in range(1, 5)]
    assert document["discontinuity"]["handovers"] == 4
    assert document["discontinuity"]["max_over_joints"]["max"] == pytest.approx(max(jumps), abs=1e-5)
    for name in ("joints.png", "horizon_error.png", "discontinuity.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == PNG_SIGNATURE


def assert_every_second_frame_was_inferred(policy, chunks, seed: int) -> None:
    """`chunks` are `policy`'s outputs for the bag's frames 0, 2, 4, ... with the noise drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    for index, chunk in enumerate(chunks):
        noise = torch.randn((1, policy.horizon, policy.config.action_dim), generator=generator)[0].numpy()
        frame_index = 2 * index  # every second 10 Hz frame
        # As on the live node, a set is used as soon as it is complete: its state is the joint sample
        # 5 ms before it (within joint_extrapolation_s), not yet one interpolated from the next sample.
        state = np.array([measured(np.array(0.1 * frame_index))[n] for n in JOINTS])
        expected = policy.infer(
            {"front": frame(frame_index, 0), "wrist": frame(frame_index, 1)}, state, "stack the blocks", noise=noise
        ).actions
        np.testing.assert_allclose(chunk.actions, expected, atol=1e-9)


def test_a_chunk_is_the_policy_output_for_its_synchronized_observation_and_seeded_noise(tmp_path, robot_yaml):
    write_run(tmp_path / "bag")
    first = evaluate_bag(
        config(tmp_path / "bag", robot_yaml, tmp_path / "a", selection=Selection(every=2, max_chunks=2))
    )
    chunks = [c.chunk for c in first.evaluation.chunks]
    assert [c.stamp - T0 / SECOND for c in chunks] == pytest.approx([0.005, 0.205], abs=1e-6)

    description = load_robot_description(robot_yaml)
    policy = load_policy(description, ModelSettings(checkpoint="", device="cpu", dtype="float32", seed=3))
    assert_every_second_frame_was_inferred(policy, chunks, seed=3)

    again = evaluate_bag(config(tmp_path / "bag", robot_yaml, tmp_path / "b", selection=Selection(max_chunks=1)))
    np.testing.assert_array_equal(again.evaluation.chunks[0].chunk.actions, chunks[0].actions)
    other_seed = evaluate_bag(
        config(tmp_path / "bag", robot_yaml, tmp_path / "c", seed=4, selection=Selection(every=2, max_chunks=1))
    )
    assert np.max(np.abs(other_seed.evaluation.chunks[0].chunk.actions - chunks[0].actions)) > 1e-3


def test_a_pi05_checkpoint_is_evaluated_with_the_same_settings_as_a_pi0_one(tmp_path, robot_yaml):
    description = load_robot_description(robot_yaml)
    normalization = demo_normalization(description)  # with q01/q99, as pi0.5 needs
    tiny = Pi0Policy.tiny(robot_io(description), normalization, seed=7, model_type="pi05")
    checkpoint = save_checkpoint(tiny.model, tmp_path / "pi05_ckpt", normalization)
    (checkpoint / SENTENCEPIECE_FILE).write_bytes(tiny_sentencepiece_model())
    write_run(tmp_path / "bag")
    settings = ModelSettings(checkpoint=str(checkpoint), device="cpu", dtype="float32", seed=3)
    outcome = evaluate_bag(
        dataclasses.replace(
            config(tmp_path / "bag", robot_yaml, tmp_path / "out"),
            model=settings,
            selection=Selection(every=2, max_chunks=3),
        )
    )
    assert outcome.report["model"]["checkpoint"] == str(checkpoint)
    assert outcome.report["references"][JOINT_STATES]["per_joint"]["j1"]["count"] > 0
    chunks = [c.chunk for c in outcome.evaluation.chunks]
    assert len(chunks) == 3 and all(c.actions.shape == (50, 5) for c in chunks)
    policy = load_policy(description, settings)
    assert policy.config.model_type == "pi05", "the checkpoint decided"
    assert_every_second_frame_was_inferred(policy, chunks, seed=3)


def test_each_observation_gets_the_instruction_of_its_goal_unless_one_is_given(tmp_path, robot_yaml):
    write_run(tmp_path / "bag", instructions=((0.0, "open the gripper"), (0.3, "close the gripper")))
    two = Selection(every=None, stride=0.5, max_chunks=2)
    recorded = evaluate_bag(config(tmp_path / "bag", robot_yaml, tmp_path / "a", selection=two))
    assert [c.instruction for c in recorded.evaluation.chunks] == ["open the gripper", "close the gripper"]
    assert recorded.report["instructions"] == ["open the gripper", "close the gripper"]
    assert [row["instruction"] for row in recorded.report["chunks"]] == [0, 1]
    given = evaluate_bag(
        config(
            tmp_path / "bag",
            robot_yaml,
            tmp_path / "b",
            instruction="wave",
            selection=Selection(every=None, stride=0.5, max_chunks=1),
        )
    )
    assert given.report["instructions"] == ["wave"]


def copy_bag(
    source: Path, target: Path, garble=lambda index, raw: False, extra=(), definitions: DefinitionSource | None = None
) -> None:
    """Copies a bag, replacing the messages `garble` picks with bytes that are no CDR, and adding `extra`."""
    with BagReader(source) as reader, BagWriter(target, definitions=definitions) as bag:
        for topic, info in reader.info.topics.items():
            bag.add_topic(topic, info.msgtype, info.offered_qos)
        for topic, msgtype, _ in extra:
            bag.add_topic(topic, msgtype)
        for index, raw in enumerate(reader.messages()):
            bag.write_serialized(
                raw.topic, b"\x00\x01\x00\x00\xff" if garble(index, raw) else raw.data, raw.timestamp_ns
            )
        for topic, _, data in extra:
            bag.write_serialized(topic, data, T0)


def test_messages_that_do_not_decode_are_skipped_and_counted(tmp_path, robot_yaml):
    write_run(tmp_path / "bag")
    copy_bag(
        tmp_path / "bag",
        tmp_path / "damaged",
        garble=lambda index, raw: raw.topic == "/front/image_raw" and raw.timestamp_ns // 100_000_000 % 3 == 0,
    )
    outcome = evaluate_bag(config(tmp_path / "damaged", robot_yaml, tmp_path / "out"))
    skipped = outcome.report["bag"]["skipped_messages"]
    assert skipped == {"/front/image_raw": 7}  # frames 0, 3, ..., 18 of 21
    assert outcome.report["selection"]["synchronized_observations"] == 14


def test_commands_that_do_not_fit_their_controller_are_skipped_and_counted(tmp_path, robot_yaml):
    write_run(tmp_path / "bag", gripper_values=2)
    outcome = evaluate_bag(
        config(
            tmp_path / "bag", robot_yaml, tmp_path / "out", selection=Selection(every=None, stride=0.5, max_chunks=1)
        )
    )
    assert outcome.report["bag"]["skipped_messages"] == {"/gripper_controller/commands": 101}
    assert "g" not in outcome.report["references"][COMMANDS]["names"]


def test_topics_of_unknown_types_that_are_not_needed_do_not_matter(tmp_path, robot_yaml):
    share = tmp_path / "share" / "fake_msgs"
    (share / "msg").mkdir(parents=True)
    (share / "msg" / "Thing.msg").write_text("int32 value\n")
    definitions = DefinitionSource(
        share_directory=lambda package: str(share) if package == "fake_msgs" else get_package_share_directory(package)
    )
    write_run(tmp_path / "bag")
    copy_bag(
        tmp_path / "bag",
        tmp_path / "extended",
        definitions=definitions,
        extra=[("/thing", "fake_msgs/msg/Thing", b"\x00\x01\x00\x00\x07\x00\x00\x00")],
    )
    outcome = evaluate_bag(
        config(
            tmp_path / "extended",
            robot_yaml,
            tmp_path / "out",
            selection=Selection(every=None, stride=0.5, max_chunks=1),
        )
    )
    assert outcome.report["selection"]["evaluated_chunks"] == 1


def test_command_line_writes_the_report_and_plots_and_prints_the_speed(tmp_path, robot_yaml, capsys):
    write_run(tmp_path / "run_01")
    code = evaluate_cli.main(
        [
            str(tmp_path / "run_01"),
            "--robot-description",
            str(robot_yaml),
            "--every",
            "10",
            "--seed",
            "1",
            "--torch-threads",
            "1",
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    directory = tmp_path / "run_01_evaluation"  # the default output, next to the bag
    assert sorted(p.name for p in directory.iterdir()) == [
        "discontinuity.png",
        "horizon_error.png",
        "joints.png",
        "report.json",
    ]
    report = json.loads((directory / "report.json").read_text())
    assert report["selection"]["every"] == 10 and report["selection"]["evaluated_chunks"] == 3
    assert "chunks/s" in out.out and "vs recorded commands: MAE" in out.out and "hand-over jump" in out.out
    assert "Traceback" not in out.err


def assert_cli_error(capsys, code: int, message: str) -> None:
    err = capsys.readouterr().err
    assert code == 1, err
    assert message in err and err.startswith("bag_evaluate: error:")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_missing_observation_topic_is_named(tmp_path, robot_yaml, capsys):
    write_run(tmp_path / "bag", skip_topics=("/wrist/image_raw",))
    with pytest.raises(BagError, match="has no topic /wrist/image_raw"):
        evaluate_bag(config(tmp_path / "bag", robot_yaml, tmp_path / "out"))
    code = evaluate_cli.main([str(tmp_path / "bag"), "--robot-description", str(robot_yaml)])
    assert_cli_error(capsys, code, "has no topic /wrist/image_raw")
    assert not (tmp_path / "out").exists()


def test_a_topic_of_the_wrong_type_is_named(tmp_path, robot_yaml, capsys):
    with BagWriter(tmp_path / "bag") as bag:
        bag.write("/front/image_raw", image_msg(0, 0, T0), T0)
        bag.write("/wrist/image_raw", image_msg(0, 1, T0), T0)
        bag.write("/joint_states", String(data="not a joint state"), T0)
    code = evaluate_cli.main([str(tmp_path / "bag"), "--robot-description", str(robot_yaml)])
    assert_cli_error(capsys, code, "topic /joint_states holds std_msgs/msg/String, expected sensor_msgs/msg/JointState")


def test_an_empty_bag_is_an_error(tmp_path, robot_yaml, capsys):
    with BagWriter(tmp_path / "bag") as bag:
        bag.add_topic("/front/image_raw", "sensor_msgs/msg/Image")
    code = evaluate_cli.main([str(tmp_path / "bag"), "--robot-description", str(robot_yaml)])
    assert_cli_error(capsys, code, "holds no messages")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_storage_fails_before_any_inference(tmp_path, robot_yaml, storage, damage, capsys, monkeypatch):
    write_run(tmp_path / "bag", storage)
    path = next(p for p in (tmp_path / "bag").iterdir() if p.suffix in (".mcap", ".db3"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a bag" * 50)
    monkeypatch.setattr(evaluate_cli, "load_policy", lambda *_: pytest.fail("the model was loaded"))
    code = evaluate_cli.main([str(tmp_path / "bag"), "--robot-description", str(robot_yaml)])
    assert_cli_error(capsys, code, str(tmp_path / "bag"))


def test_a_bag_without_instruction_needs_one(tmp_path, robot_yaml, capsys):
    write_run(tmp_path / "bag", instructions=())
    code = evaluate_cli.main([str(tmp_path / "bag"), "--robot-description", str(robot_yaml)])
    assert_cli_error(capsys, code, "give one with --instruction")


def test_a_bag_without_a_synchronizable_observation_says_why_before_loading_the_model(
    tmp_path, robot_yaml, capsys, monkeypatch
):
    write_run(tmp_path / "bag", state_joints=("j1", "j2"))
    monkeypatch.setattr(evaluate_cli, "load_policy", lambda *_: pytest.fail("the model was loaded"))
    code = evaluate_cli.main([str(tmp_path / "bag"), "--robot-description", str(robot_yaml)])
    assert_cli_error(
        capsys,
        code,
        "has no synchronizable observation of /front/image_raw, /wrist/image_raw, "
        "/joint_states: no joint state yet for g",
    )


def test_bad_arguments_are_one_line_errors(tmp_path, robot_yaml, capsys):
    write_run(tmp_path / "bag", duration_s=0.2)
    code = evaluate_cli.main([str(tmp_path / "bag"), "--robot-description", str(tmp_path / "missing.yaml")])
    assert_cli_error(capsys, code, "cannot read robot description")
    code = evaluate_cli.main([str(tmp_path / "bag"), "--robot-description", str(robot_yaml), "--every", "0"])
    assert_cli_error(capsys, code, "every must be an integer >= 1")
    code = evaluate_cli.main(
        [str(tmp_path / "bag"), "--robot-description", str(robot_yaml), "--checkpoint", str(tmp_path / "no_checkpoint")]
    )
    assert_cli_error(capsys, code, "no_checkpoint")
    with pytest.raises(SystemExit):
        evaluate_cli.main([str(tmp_path / "bag"), "--robot-description", str(robot_yaml), "--device", "gpu"])
    assert "expected cpu, cuda or cuda:N" in capsys.readouterr().err


def test_progress_line_reports_bag_time_chunks_and_speed(tmp_path):
    with open(tmp_path / "log", "w") as stream:
        progress = Progress(stream, start_ns=T0, end_ns=T0 + 10 * SECOND, width=10)
        line = progress.line(T0 + 5 * SECOND, count=20, elapsed=4.0)
    assert line == "[#####.....]  50%  5.0/10.0 s of bag  20 chunks  5.00 chunks/s"
