"""Paths of the robot descriptions shipped in pi0_bringup (source tree, no install needed)."""

from pathlib import Path

ROBOTS_DIR = Path(__file__).resolve().parents[2] / "pi0_bringup" / "config" / "robots"
ROBOT_NAMES = ("aloha", "mobile_aloha", "ur5e", "franka")


def robot_yaml(name: str) -> Path:
    return ROBOTS_DIR / f"{name}.yaml"
