#!/bin/bash
# Runs the container's command inside the ROS 2 + pi0_ros environment: the distribution's setup,
# the Python environment holding torch and the ML stack, then the pi0_ros workspace overlay.
set -e
source "/opt/ros/${ROS_DISTRO}/setup.bash"
source "${PI0_VENV}/bin/activate"
source "${PI0_WS}/install/setup.bash"
exec "$@"
