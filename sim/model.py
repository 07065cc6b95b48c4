"""MJCF of the xArm5 cell, generated from the kinematics table so the twin's joints are exact.

    xml = build_cell_xml(task_objects_xml="")   # arm + gripper + table + camera
    model = mujoco.MjModel.from_xml_string(xml)

Link bodies are placed with UFACTORY's xyz/rpy (``robot.kinematics.XARM5``); geometry is
simple capsules and boxes. Masses are close to UFACTORY's published link inertials; the
controller compensates gravity (``gravcomp``) as the real controller does, and joints are
position-servoed with damping, like the servo mode the driver streams to.
"""

from __future__ import annotations

import numpy as np
from video2reward.robot.kinematics import GRIPPER_TCP_OFFSET_M, XARM5, quat_wxyz_from_rpy

# Gripper geometry (flange frame: z points out of the flange, towards the work).
FINGER_TRAVEL_M = 0.0425  # per finger: 0 (closed) ... 42.5 mm; 85 mm total like the xArm Gripper
_HOUSING_LEN_M = 0.110
_FINGER_LEN_M = GRIPPER_TCP_OFFSET_M - _HOUSING_LEN_M

# Masses (kg), rounded from UFACTORY's xarm5 link inertial files.
_LINK_MASS_KG = (2.18, 1.70, 1.73, 1.15, 0.24)
_LINK_RADIUS_M = (0.050, 0.045, 0.040, 0.036, 0.032)

# Collision groups: the arm touches objects but not itself or the table; objects touch all.
ARM_COLLISION = 'contype="2" conaffinity="0"'
OBJECT_COLLISION = 'contype="1" conaffinity="3"'
TABLE_COLLISION = 'contype="1" conaffinity="1"'
VISUAL_ONLY = 'contype="0" conaffinity="0" group="1"'


def _vec(v: tuple[float, ...] | np.ndarray) -> str:
    return " ".join(f"{float(x):.9g}" for x in v)


def _arm_xml(tool_xml: str = "") -> str:
    """Nested bodies link1..link5 with the gripper on link5."""
    children_xyz = [spec.xyz_m for spec in XARM5[1:]] + [(0.0, 0.0, 0.0)]
    opens: list[str] = []
    for i, spec in enumerate(XARM5):
        nxt = children_xyz[i]
        r = _LINK_RADIUS_M[i]
        seg = ""
        if np.linalg.norm(nxt) > 1e-9:
            seg = (
                f'<geom name="link{i + 1}_seg" type="capsule" size="{r}" '
                f'fromto="0 0 0 {_vec(nxt)}" material="arm" {ARM_COLLISION}/>'
            )
        hub = (
            f'<geom name="link{i + 1}_hub" type="cylinder" size="{r * 1.1} {r}" '
            f'material="arm_dark" {ARM_COLLISION}/>'
        )
        com = np.asarray(nxt) / 2
        m = _LINK_MASS_KG[i]
        inertia = m * r * r / 2
        opens.append(
            f'<body name="link{i + 1}" pos="{_vec(spec.xyz_m)}" quat="{_vec(quat_wxyz_from_rpy(spec.rpy_rad))}" gravcomp="1">\n'
            f'  <joint name="{spec.name}" axis="0 0 1" range="{spec.lower_rad:.6f} {spec.upper_rad:.6f}" '
            f'damping="40" armature="0.05"/>\n'
            f'  <inertial pos="{_vec(com)}" mass="{m}" diaginertia="{inertia * 4} {inertia * 4} {inertia}"/>\n'
            f"  {hub}\n  {seg}"
        )
    gripper = f"""
  <body name="gripper" pos="0 0 0" gravcomp="1">
    <inertial pos="0 0 0.06" mass="0.82" diaginertia="0.002 0.002 0.001"/>
    <geom name="gripper_housing" type="box" size="0.030 0.045 {_HOUSING_LEN_M / 2}" pos="0 0 {_HOUSING_LEN_M / 2}" material="gripper" {ARM_COLLISION}/>
    <site name="flange" pos="0 0 0" size="0.005"/>
    <site name="tcp" pos="0 0 {GRIPPER_TCP_OFFSET_M}" size="0.004" rgba="1 1 0 0"/>
    {tool_xml}
    <body name="finger_left" pos="0 0.006 {_HOUSING_LEN_M}" gravcomp="1">
      <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_TRAVEL_M}" damping="2" armature="0.01"/>
      <inertial pos="0 0 0.03" mass="0.05" diaginertia="1e-5 1e-5 1e-5"/>
      <geom name="finger_left" type="box" size="0.012 0.006 {_FINGER_LEN_M / 2}" pos="0 0 {_FINGER_LEN_M / 2}" material="finger" friction="1.0 0.01 0.001" solref="0.004 1" {ARM_COLLISION}/>
    </body>
    <body name="finger_right" pos="0 -0.006 {_HOUSING_LEN_M}" gravcomp="1">
      <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {FINGER_TRAVEL_M}" damping="2" armature="0.01"/>
      <inertial pos="0 0 0.03" mass="0.05" diaginertia="1e-5 1e-5 1e-5"/>
      <geom name="finger_right" type="box" size="0.012 0.006 {_FINGER_LEN_M / 2}" pos="0 0 {_FINGER_LEN_M / 2}" material="finger" friction="1.0 0.01 0.001" solref="0.004 1" {ARM_COLLISION}/>
    </body>
  </body>"""
    return "\n".join(opens) + gripper + "\n" + "</body>\n" * len(XARM5)


def build_cell_xml(
    task_objects_xml: str = "",
    *,
    timestep_s: float = 0.002,
    msaa_samples: int = 0,
    tool_xml: str = "",
    assets_xml: str = "",
    offscreen_wh: tuple[int, int] = (640, 480),
) -> str:
    """The full cell.

    ``task_objects_xml`` goes into the worldbody; ``tool_xml`` into the gripper body (flange
    frame, e.g. a calibration board held by the gripper); ``assets_xml`` into <asset>
    (textures and materials those use).
    """
    actuators = "\n".join(
        f'<position name="act_{s.name}" joint="{s.name}" kp="4000" ctrlrange="{s.lower_rad:.6f} {s.upper_rad:.6f}" forcerange="-300 300"/>'
        for s in XARM5
    )
    return f"""<mujoco model="xarm5_cell">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep_s}" integrator="implicitfast" cone="elliptic"/>
  <visual>
    <global offwidth="{offscreen_wh[0]}" offheight="{offscreen_wh[1]}"/>
    <quality shadowsize="0" offsamples="{msaa_samples}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.5 0.5 0.5" specular="0.1 0.1 0.1"/>
  </visual>
  <asset>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.25 0.26 0.28" rgb2="0.3 0.31 0.33" width="256" height="256"/>
    <material name="floor" texture="floor" texrepeat="8 8"/>
    <material name="table" rgba="0.72 0.62 0.50 1"/>
    <material name="arm" rgba="0.92 0.92 0.92 1"/>
    <material name="arm_dark" rgba="0.35 0.35 0.38 1"/>
    <material name="gripper" rgba="0.2 0.2 0.22 1"/>
    <material name="finger" rgba="0.55 0.55 0.6 1"/>
    {assets_xml}
  </asset>
  <worldbody>
    <light name="key" pos="0.4 -0.6 1.6" dir="0 0.3 -1" diffuse="0.6 0.6 0.6" castshadow="false"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" material="floor" {VISUAL_ONLY}/>
    <geom name="table" type="box" size="0.5 0.6 0.02" pos="0.35 0 -0.02" material="table" friction="0.6 0.005 0.0001" {TABLE_COLLISION}/>
    <body name="link_base" pos="0 0 0">
      <geom name="base_column" type="cylinder" size="0.06 {XARM5[0].xyz_m[2] / 2}" pos="0 0 {XARM5[0].xyz_m[2] / 2}" material="arm" {ARM_COLLISION}/>
      {_arm_xml(tool_xml)}
    </body>
    {task_objects_xml}
    <camera name="realsense" mode="fixed" pos="1 0 0.5" xyaxes="0 1 0 -0.4 0 0.9" fovy="42.5"/>
  </worldbody>
  <equality>
    <joint name="finger_couple" joint1="finger_right" joint2="finger_left" polycoef="0 1 0 0 0" solref="0.005 1"/>
  </equality>
  <actuator>
    {actuators}
    <position name="act_gripper" joint="finger_left" kp="400" ctrlrange="0 {FINGER_TRAVEL_M}" forcerange="-40 40"/>
  </actuator>
</mujoco>
"""
