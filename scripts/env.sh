# Source this file (bash) to use the workspace built by scripts/setup.sh:
#   source scripts/env.sh
# It activates .venv, puts the PyPI ROS 2 wheels (if used) on the ament path and
# sources the colcon install space.
_pi0_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$_pi0_root/install/setup.bash" ]; then
  echo "pi0_ros workspace is not built yet: run 'make setup' in $_pi0_root" >&2
  return 1 2>/dev/null || exit 1
fi
if [ -n "${ROS_DISTRO:-}" ] && [ -f "/opt/ros/${ROS_DISTRO}/setup.bash" ]; then
  source "/opt/ros/${ROS_DISTRO}/setup.bash"
else
  export AMENT_PREFIX_PATH="$_pi0_root/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fi
source "$_pi0_root/.venv/bin/activate"
source "$_pi0_root/install/setup.bash"
unset _pi0_root
