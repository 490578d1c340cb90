"""The process supervisor that the runner, the demo, the runtime benchmark and the tests share."""

import os
import signal
import subprocess
import sys

import pytest

from pi0_bringup.graph import NodeSpec
from pi0_bringup.supervisor import GraphProcesses, NodeProcess, ProcessExitedError, stop_processes, wait_until

STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_stop_processes_escalates_to_sigkill(tmp_path):
    child = NodeProcess("stubborn", [sys.executable, "-c", STUBBORN], os.environ, tmp_path)
    wait_until(lambda: "ready" in child.stdout_text(), 30.0, "the child to start")
    stop_processes([child], sequence=((signal.SIGINT, 0.2), (signal.SIGTERM, 0.2), (signal.SIGKILL, 5.0)))
    assert not child.running
    assert child.returncode == -signal.SIGKILL


def test_a_child_that_exited_reports_its_last_output(tmp_path):
    child = NodeProcess(
        "failing", [sys.executable, "-c", "import sys; sys.exit('bad parameter: x')"], os.environ, tmp_path
    )
    child.wait(30.0)
    with pytest.raises(ProcessExitedError, match=r"failing exited early with code 1(.|\n)*bad parameter: x"):
        child.check_running()


def test_stdout_apart_keeps_the_result_out_of_the_log(tmp_path):
    child = NodeProcess(
        "result",
        [sys.executable, "-c", "import sys; print('[1, 2]'); print('warn', file=sys.stderr)"],
        os.environ,
        tmp_path,
        stdout_apart=True,
    )
    assert child.wait(30.0) and child.returncode == 0
    assert child.stdout_text().strip() == "[1, 2]"
    assert "warn" in (tmp_path / "result.log").read_text()


SUPERVISOR = """
import sys, time
from pathlib import Path
from pi0_bringup.supervisor import NodeProcess
child = NodeProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_children_die_with_a_supervisor_killed_without_clean_up():
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE, text=True)
    try:
        child = int(supervisor.stdout.readline())
        wait_until(lambda: _cmdline(child).endswith("time.sleep(120)"), 30.0, "the child to exec its command")
    finally:
        supervisor.kill()
        supervisor.wait()
    wait_until(lambda: not _alive(child), 30.0, "the child to die with its supervisor")


def _cmdline(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as file:
            status = file.read()
    except OSError:
        return False
    return "\nState:\tZ" not in status


STUB_NODE = """
import signal, sys, time
from pathlib import Path
name = next(a.split(":=")[1] for a in sys.argv if a.startswith("__node:="))
print("started", name, flush=True)
if Path(__file__).with_name(name + ".crash").exists():
    Path(__file__).with_name(name + ".crash").unlink()
    sys.exit(5)
signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
while True:
    time.sleep(0.05)
"""


def test_graph_processes_log_per_node_and_a_restart_appends(tmp_path):
    (tmp_path / "stub_node.py").write_text(STUB_NODE)
    (tmp_path / "flaky.crash").touch()
    specs = [NodeSpec("stub", "stub", "stub_node", "flaky", {})]
    logs = tmp_path / "logs"
    with GraphProcesses(specs, log_dir=logs, env={**os.environ, "PYTHONPATH": str(tmp_path)}) as graph:
        assert wait_until(graph.exited, 30.0, "the first process to crash") == ("flaky", 5)
        with pytest.raises(ProcessExitedError, match="flaky exited early with code 5"):
            graph.check_running()
        graph.restart("flaky")
        wait_until(lambda: (logs / "flaky.log").read_text().count("started flaky") == 2, 30.0, "the restart")
        assert graph.exited() is None
    assert graph.processes["flaky"].returncode == 0


@pytest.mark.parametrize("module", ["pi0_bringup.supervisor", "pi0_bringup.benchmark.support"])
def test_the_supervisor_imports_neither_ros_nor_torch(module):
    # The benchmark's bare-loop child and the runner start quickly; the supervisor must not pull rclpy in.
    code = f"import sys, {module}; print(sorted({{'rclpy', 'torch'}} & {{m.split('.')[0] for m in sys.modules}}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
