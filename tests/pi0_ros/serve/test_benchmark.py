"""The transport benchmark runs end to end (briefly; no timing is asserted: the machine may be busy)."""

import pytest

from pi0_ros.serve.benchmark import main
from support.robots import robot_yaml


@pytest.mark.slow
def test_benchmark_prints_local_remote_and_overhead(capsys):
    assert main(["--robot", str(robot_yaml("aloha")), "--chunks", "2", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 cameras 224x224" in out
    for row in ("local Pi0Policy.infer", "through pi0_serve", "of which transport", "overhead (remote - local)"):
        assert row in out, out
