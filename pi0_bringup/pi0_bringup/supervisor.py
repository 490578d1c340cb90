"""The one process supervisor of pi0_bringup: the runner, the demo, the runtime benchmark and the tests
start node graphs (and helper processes) through it.

- `NodeProcess`: one child in a process group of its own (so a signal reaches the node and
  anything it starts), killed with its parent (PR_SET_PDEATHSIG on Linux, so a supervisor
  killed without clean-up leaves nothing behind), output in a log file or inherited.
- `stop_processes`: SIGINT (a node's clean ROS shutdown), then SIGTERM, then SIGKILL, in
  parallel, each after `STOP_SEQUENCE`'s grace period.
- `GraphProcesses`: the nodes of `pi0_bringup.graph.node_graph()`, one process each, with
  restart of a crashed node (the runner's respawn).
- `isolate_ros_domain`: a private ROS domain on localhost for this process and its children.

Deliberately no new session per child: the kernel's autogroup scheduling shares CPU per
session, and one session per node made the 50 Hz streamer wait behind the others (a launch
file keeps all nodes in one session too). No rclpy import: the benchmark's bare-loop child
imports this module and must start quickly.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol, TypeVar

import yaml

from pi0_bringup.graph import NodeSpec

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    check: Callable[[], None] | None = None,
    poll: float = 0.02,
    error: type[Exception] = TimeoutError,
) -> T:
    """Polls `predicate` until it returns a truthy value, which it returns; raises `error` naming `what`
    after `timeout` s. `check` runs before each poll and raises to end the wait early (a node exited)."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(poll)


class Spinnable(Protocol):
    def spin_once(self, timeout_sec: float | None = None) -> None: ...


def spin_until(executor: Spinnable, predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Spins an rclpy executor on this thread until `predicate` holds; raises TimeoutError naming `what`."""

    def spun() -> bool:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.01)
        return False

    wait_until(spun, timeout, what, poll=0.0)


# Runs in the child before its command: PR_SET_PDEATHSIG (which survives exec), so that the
# child dies with a supervisor killed without clean-up. The ppid check closes the race of a
# parent that died before prctl ran. The death signal is tied to the thread that started the
# child: start children from a thread that lives as long as they should (the main thread).
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)

# Signals that end a child, each with how long it gets to exit before the next one (launch's
# sigterm_timeout is 5 s too).
STOP_SEQUENCE: tuple[tuple[int, float], ...] = ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0))


class ProcessExitedError(RuntimeError):
    """A supervised process ended while it was still needed."""


class NodeProcess:
    """One supervised child process.

    With `log_dir`, stdout and stderr go to `<log_dir>/<name>.log` (appended, so a restart keeps
    the earlier output); with `stdout_apart`, stdout goes to `<name>.out` instead (for a child
    whose stdout is its result). Without `log_dir` the child shares this process's output.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        stdout_apart: bool = False,
    ) -> None:
        self.name = name
        self.log_path: Path | None = None
        self.stdout_path: Path | None = None
        files: list[IO] = []
        stdout = stderr = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            self.log_path = log_dir / f"{name}.log"
            self.stdout_path = log_dir / f"{name}.out" if stdout_apart else self.log_path
            stderr = open(self.log_path, "ab")  # noqa: SIM115 - open for the child's life, closed in stop()
            files.append(stderr)
            if stdout_apart:
                stdout = open(self.stdout_path, "wb")  # noqa: SIM115 - as above
                files.append(stdout)
            else:
                stdout = stderr
        linux = sys.platform.startswith("linux")
        argv = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *command] if linux else list(command)
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=dict(os.environ if env is None else env),
                process_group=0,
            )
        finally:
            for file in files:
                file.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        return self.process.poll()

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def check_running(self) -> None:
        if not self.running:
            raise ProcessExitedError(
                f"{self.name} exited early with code {self.process.returncode}{self.describe_output()}"
            )

    def describe_output(self, lines: int = 15) -> str:
        tail = self.output_tail(lines)
        return f"; last lines of its output:\n{tail}" if tail else " without output"

    def output_tail(self, lines: int) -> str:
        text = _read_text(self.log_path) or _read_text(self.stdout_path)
        return "\n".join(f"    {line}" for line in text.rstrip().splitlines()[-lines:])

    def stdout_text(self) -> str:
        return _read_text(self.stdout_path)

    def signal(self, sig: int) -> None:
        if not self.running:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float) -> bool:
        """True once the process has ended, False if it still runs after `timeout` s."""
        try:
            self.process.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False


def stop_processes(processes: Iterable[NodeProcess], sequence: Sequence[tuple[int, float]] = STOP_SEQUENCE) -> None:
    """Ends every process: SIGINT (clean ROS shutdown), then SIGTERM, then SIGKILL, all in parallel."""
    remaining = [p for p in processes if p.running]
    for sig, grace in sequence:
        if not remaining:
            return
        for process in remaining:
            process.signal(sig)
        deadline = time.monotonic() + grace
        remaining = [p for p in remaining if not p.wait(max(0.0, deadline - time.monotonic()))]


def _read_text(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# -- node graphs -----------------------------------------------------------------------------------


def node_command(spec: NodeSpec, namespace: str, params_file: Path) -> list[str]:
    """The node's process; the user's parameter files first, so the graph's own values win (as in launch)."""
    command = [sys.executable, "-m", spec.module, "--ros-args", "-r", f"__node:={spec.name}"]
    for user_file in spec.params_files:
        command += ["--params-file", user_file]
    command += ["--params-file", str(params_file)]
    if namespace:
        command += ["-r", f"__ns:={namespace}"]
    return command


def write_params_file(spec: NodeSpec, directory: Path) -> Path:
    path = directory / f"{spec.name}.yaml"
    # "/**" matches the node whatever its namespace; each file is given to one node only.
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": dict(spec.parameters)}}, sort_keys=False))
    return path


class GraphProcesses:
    """The processes of a node graph (one `NodeProcess` per node); a context manager that always stops them."""

    def __init__(
        self,
        specs: Sequence[NodeSpec],
        namespace: str = "",
        log_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.specs = tuple(specs)
        self.namespace = namespace
        self.log_dir = log_dir
        self.env = dict(os.environ if env is None else env)
        self.processes: dict[str, NodeProcess] = {}
        self._params_dir = tempfile.TemporaryDirectory(prefix="pi0_graph_")

    def __enter__(self) -> GraphProcesses:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        for spec in self.specs:
            self._start(spec)

    def restart(self, name: str) -> None:
        """Starts the node `name` again (its previous process has ended)."""
        self._start(self.spec(name))

    def spec(self, name: str) -> NodeSpec:
        return next(s for s in self.specs if s.name == name)

    def _start(self, spec: NodeSpec) -> None:
        params = write_params_file(spec, Path(self._params_dir.name))
        self.processes[spec.name] = NodeProcess(
            spec.name, node_command(spec, self.namespace, params), self.env, self.log_dir
        )

    def exited(self, ignore: Iterable[str] = ()) -> tuple[str, int] | None:
        """(node name, exit code) of the first node that ended, except those in `ignore`; None while all run."""
        for name, process in self.processes.items():
            if name in ignore:
                continue
            code = process.poll()
            if code is not None:
                return name, code
        return None

    def check_running(self) -> None:
        """Raises ProcessExitedError, with the node's last output, when a node has ended."""
        for process in self.processes.values():
            process.check_running()

    def stop(self, timeout: float = STOP_SEQUENCE[0][1]) -> dict[str, int]:
        """SIGINT to every node, then SIGTERM and SIGKILL for those still running. Returns exit codes."""
        stop_processes(self.processes.values(), ((STOP_SEQUENCE[0][0], timeout), *STOP_SEQUENCE[1:]))
        self._params_dir.cleanup()
        return {name: p.returncode for name, p in self.processes.items()}


# -- ROS traffic isolation ----------------------------------------------------------------------------


def isolate_ros_domain(domain: int | None = None) -> int:
    """A private ROS domain on localhost for this process and the processes it starts.

    Set in this process's environment because rcl reads discovery settings from it (at
    rclpy.init), and children inherit it. `domain` None: a random one in 1..101. Returns the domain.
    """
    if domain is None:
        domain = random.SystemRandom().randint(1, 101)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    if os.environ.get("ROS_DISTRO") == "humble":
        os.environ["ROS_LOCALHOST_ONLY"] = "1"
    else:
        os.environ.pop("ROS_LOCALHOST_ONLY", None)
    return domain
