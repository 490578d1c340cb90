"""`make demo`'s main job end to end, with a quickly trained demo policy to keep it short."""

import signal
import subprocess
import sys
import time

import pytest

from pi0_bringup.demo_policy import DemoTraining, demo_checkpoint
from pi0_bringup.demo_tasks import ScriptSettings
from pi0_bringup.robots import load_robot

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    quick = DemoTraining(
        script=ScriptSettings(episodes_per_instruction=1, demonstration_s=0.5, reset_s=0.2),
        image_size=(32, 24),
        steps=2,
        batch_size=2,
        warmup_steps=1,
    )
    return demo_checkpoint(load_robot("aloha"), quick, report=lambda line: None, cache=tmp_path_factory.mktemp("demo"))


def test_demo_runs_goals_through_the_action_interface_and_writes_summary_and_plot(tmp_path, checkpoint):
    output = tmp_path / "demo"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pi0_bringup.demo",
            "--robot",
            "aloha",
            "--checkpoint",
            str(checkpoint),
            "--instruction",
            "raise the arms",
            "--instruction",
            "go home",
            "--duration",
            "2",
            "--image-size",
            "96x72",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout[done.stdout.index("pi0_ros demo summary") :]
    assert "'raise the arms': duration reached" in summary and "'go home': duration reached" in summary
    assert "rate" in summary and "jitter" in summary and "inference latency" in summary
    # a two-step policy reaches nothing: each demo instruction is checked against the demo's goal pose all the same
    assert summary.count("the demo's goal pose: ended") == 2 and summary.count("tick-to-tick change") == 2
    plot = output / "aloha_commands.png"
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p.name for p in (output / "logs").iterdir()} == {
        "pi0_sim_robot.log",
        "pi0_policy.log",
        "pi0_command_streamer.log",
    }


def test_demo_refuses_an_unknown_robot_clearly(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pi0_bringup.demo", "--robot", "r2d2", "--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "unknown robot 'r2d2'" in done.stderr


def test_sigterm_stops_the_demo_and_its_nodes_at_once(tmp_path, checkpoint):
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pi0_bringup.demo",
            "--robot",
            "aloha",
            "--checkpoint",
            str(checkpoint),
            "--instruction",
            "raise the arms",
            "--duration",
            "60",
            "--image-size",
            "96x72",
            "--output",
            str(tmp_path / "demo"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in demo.stdout:
            if "[demo] instruction:" in line:
                break
        demo.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = demo.communicate(timeout=30)
        stopped_after = time.monotonic() - started
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.communicate()
    assert demo.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert stopped_after < 15.0, "stopped at once, not when the 60 s goal would have ended"
    nodes = subprocess.run(["pgrep", "-f", str(checkpoint)], capture_output=True, text=True).stdout.split()
    assert nodes == [], "nodes left running after the demo stopped"
