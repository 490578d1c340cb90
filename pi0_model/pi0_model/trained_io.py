"""The robot I/O a checkpoint was trained with, written beside it and checked when it is loaded.

pi0_model.train writes `robot_io.json` into every checkpoint: which camera fed
which image slot, the robot adaptations, and the state and action layout
(sizes, and names when the dataset has them). `Pi0Policy.from_checkpoint`
compares it with the RobotIO it is asked to serve and refuses a checkpoint
that would read the robot differently from how it was trained (cameras in the
wrong slots, another adaptation, reordered joints): the deployment mistakes
that otherwise show up only as a robot doing the wrong thing. Checkpoints
without the file (openpi's, LeRobot's) load unchecked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError

if TYPE_CHECKING:
    from .policy import RobotIO

TRAINED_IO_FILE = "robot_io.json"
FORMAT_VERSION = 1


def trained_io_record(io: RobotIO, dataset: str) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "camera_slots": dict(io.camera_slots),
        "transforms": [str(t) for t in io.transforms],
        "state_dim": io.state_dim,
        "action_dim": io.action_dim,
        "state_names": list(io.state_names),
        "action_names": list(io.action_names),
    }


def write_trained_io(directory: Path, io: RobotIO, dataset: str) -> None:
    (directory / TRAINED_IO_FILE).write_text(json.dumps(trained_io_record(io, dataset), indent=2) + "\n")


def check_trained_io(directory: Path, io: RobotIO) -> None:
    """CheckpointError naming every way `io` reads the robot differently from the training; nothing without
    the file. Names are compared where both sides have them; transforms given as objects are not compared."""
    path = directory / TRAINED_IO_FILE
    if not path.is_file():
        return
    try:
        trained = json.loads(path.read_text())
        differences = _differences(trained, io)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"{path} is malformed: {exc}") from None
    if differences:
        raise CheckpointError(
            f"checkpoint {directory} was trained on {trained.get('dataset') or 'a dataset'} with another robot I/O "
            f"than this robot's: {'; '.join(differences)}. Make the robot description match the training "
            f"(cameras' slots, policy.transforms, policy.state and policy.actions) or train for this robot; "
            f"deleting {TRAINED_IO_FILE} skips this check"
        )


def _differences(trained: dict[str, Any], io: RobotIO) -> list[str]:
    found = []
    cameras = {str(k): str(v) for k, v in trained["camera_slots"].items()}
    if cameras != dict(io.camera_slots):
        found.append(f"cameras -> slots trained {cameras}, here {dict(io.camera_slots)}")
    if all(isinstance(t, str) for t in io.transforms) and list(trained["transforms"]) != list(io.transforms):
        found.append(f"transforms trained {list(trained['transforms'])}, here {list(io.transforms)}")
    for label in ("state", "action"):
        trained_dim, dim = int(trained[f"{label}_dim"]), getattr(io, f"{label}_dim")
        trained_names, names = list(trained[f"{label}_names"]), list(getattr(io, f"{label}_names"))
        if trained_dim != dim:
            found.append(f"{label} size trained {trained_dim}, here {dim}")
        elif trained_names and names and trained_names != names:
            found.append(f"{label} names trained {trained_names}, here {names}")
    return found
