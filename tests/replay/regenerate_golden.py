"""Regenerates tests/replay/fixtures/golden_replay.json from a fresh run of the replay scenario.

    scripts/with_env.sh python tests/replay/regenerate_golden.py

Run it after a deliberate change of what the scenario produces (the tiny model,
its sampling, the simulator's rendering, the policy node or the streamer), then
review the diff of the fixture and commit it together with that change.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from pi0_bringup.supervisor import isolate_ros_domain

# Like tests/conftest.py: a DDS domain of its own (ROS_DOMAIN_ID if set) on localhost, before rclpy starts.
isolate_ros_domain(int(os.environ["ROS_DOMAIN_ID"]) if os.environ.get("ROS_DOMAIN_ID") else None)
# pytest puts tests/ on the path (pytest.ini); a plain script has to do it itself for `support`.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import replay_scenario as scenario  # noqa: E402 - needs the path and environment set above


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="pi0_golden_") as directory:
        bag = Path(directory) / "sim_bag"
        scenario.record_sim_bag(bag)
        scene = scenario.read_scene(bag)
        if scene.distinct_images != len(scene.image_sha256) or scene.distinct_joint_states != 1:
            print(
                "error: the simulated robot did not stay still while recording; golden values need a static scene",
                file=sys.stderr,
            )
            return 1
        outcome = scenario.replay_through_policy(bag)
    document = scenario.golden_document(outcome, scene)
    scenario.write_golden(document)
    print(f"wrote {scenario.FIXTURE} ({len(document['chunks'])} chunks, result: {outcome.goal_result.message})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
