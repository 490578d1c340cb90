"""Opens a dataset with LeRobot's own LeRobotDataset and dumps every item (run inside a reference venv).

    python lerobot_load.py DATASET_ROOT OUT.npz

Runs in the environment of a LeRobot release (tests/support/lerobot_env.py),
never in the project's: it imports nothing of this repository. Writes the
loader's frames as arrays (images back to uint8: LeRobot returns them as
float [3, H, W] = uint8 / 255), the task of every frame, and the stats and
version the loader reports, for the test to compare with pi0_model.dataset.
"""

import json
import sys

import numpy as np
from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION, LeRobotDataset


def main(root: str, out: str) -> None:
    # pyav: the decoder of the stack openpi pins; torchcodec needs FFmpeg's shared libraries installed
    dataset = LeRobotDataset("local/converted", root=root, video_backend="pyav")
    items = [dataset[i] for i in range(len(dataset))]
    arrays = {}
    for key in items[0]:
        if key == "task":
            continue
        values = np.stack([item[key].numpy() for item in items])
        if key in dataset.meta.video_keys:
            values = np.round(values * 255).astype(np.uint8).transpose(0, 2, 3, 1)  # -> [N, H, W, 3]
        arrays[key] = values
    stats = {
        key: {name: np.asarray(value).tolist() for name, value in feature.items()}
        for key, feature in dataset.meta.stats.items()
    }
    document = {
        "codebase_version": CODEBASE_VERSION,
        "fps": dataset.fps,
        "num_episodes": dataset.num_episodes,
        "tasks": [item["task"] for item in items],
        "video_keys": list(dataset.meta.video_keys),
        "stats": stats,
    }
    np.savez(out, meta=np.array(json.dumps(document)), **arrays)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
