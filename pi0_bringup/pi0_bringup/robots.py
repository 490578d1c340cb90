"""Where the shipped robot descriptions live, and looking them up by name."""

from __future__ import annotations

from pathlib import Path

from pi0_ros.core.robot_description import DescriptionError, RobotDescription, load_robot_description

PACKAGE = "pi0_bringup"


def robots_dir() -> Path:
    """config/robots of the installed package (ament index), else of the source tree."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            installed = Path(get_package_share_directory(PACKAGE)) / "config" / "robots"
            if installed.is_dir():
                return installed
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return Path(__file__).resolve().parents[1] / "config" / "robots"


def available_robots() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in robots_dir().glob("*.yaml")))


def robot_description_path(robot: str) -> Path:
    """The YAML of a shipped robot name, or `robot` itself when it is a path to a YAML file."""
    candidate = Path(robot)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise DescriptionError(f"robot description file {candidate} does not exist")
        return candidate.resolve()
    path = robots_dir() / f"{robot}.yaml"
    if not path.is_file():
        raise DescriptionError(
            f"unknown robot '{robot}'; shipped robots: {', '.join(available_robots())} (or pass a path to a YAML file)"
        )
    return path


def load_robot(robot: str, model_here: bool = True) -> RobotDescription:
    """The description; with `model_here` (the policy runs in this graph, not on a policy server) its model
    adaptations are checked too, so launch refuses a broken one before any node starts."""
    description = load_robot_description(robot_description_path(robot))
    if not model_here:
        return description  # the server adapts; a robot PC without the model stack cannot check them
    from pi0_ros.policy.model_adaptations import check_model_adaptations

    return check_model_adaptations(description)
