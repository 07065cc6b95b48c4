"""Observation, action and episode-store keys, in one place.

    from video2reward.data import keys
    frames = store.episode(0)[keys.IMAGE]

Every producer (twin, recorder, importer) and consumer (reward training, replay) uses these
names, so the zarr layout stays one layout.
"""

# Per-step arrays, stored as data/<key> with shape (T, ...).
IMAGE = "img"  # (T, H, W, 3) uint8 RGB
EE_POS = "ee_pos"  # (T, 3) float32, tool-centre point in the base frame, metres
EE_QUAT = "ee_quat"  # (T, 4) float32, tool orientation in the base frame, (w, x, y, z)
JOINT_POS = "joint_pos"  # (T, 5) float32, joint angles, radians
GRIPPER = "gripper"  # (T, 1) float32, opening fraction: 0 closed, 1 fully open (850 on the xArm)
ACTION = "action"  # (T, 4) float32, normalized command actually applied after safety clipping
TIMESTAMP = "timestamp"  # (T,) float64, seconds since episode start (wall clock for real data)
ORACLE_REWARD = "oracle_reward"  # (T,) float32, twin only: dense oracle reward, for baselines
SUCCESS = "success"  # (T,) bool, twin only: task predicate at each step
# (T, H, W) uint16, millimetres along the optical axis, aligned to img (a RealSense's z16 with
# rs.align); 0 = no reading. Optional: stores recorded with depth (the point-map policy's demos).
DEPTH = "depth"
DEPTH_SCALE_M = 0.001  # metres per DEPTH unit
# (T, H, W, 3) uint8, the learner's replay with pointmap: each agent frame's point map (base-
# frame x, y, z quantised over the learner's box; data/pointmap.py) beside its img.
POINTMAP = "xyz"

# Row t holds the observation before action t and the action applied after it; an episode of
# N commands has N + 1 rows, the last one the final observation with a zero action.
# The learner's replay store (policies/replay.py, episode kind "agent") is written this way
# too (ATTR_ACTION_ROW below); replay stores written before 2026-12-06 lack that attribute and
# hold in row t the action that led to observation t (row 0: zeros).

# Per-episode arrays, stored as meta/<key> with shape (E, ...).
EPISODE_ENDS = "episode_ends"  # (E,) int64, exclusive end index of each episode in data/*
EPISODE_SUCCESS = "episode_success"  # (E,) bool
EPISODE_TASK = "episode_task"  # (E,) str
EPISODE_KIND = "episode_kind"  # (E,) str: "expert", "failed", "random", "teleop", "human"
EPISODE_NOTES = "episode_notes"  # (E,) str, free text from the operator

# Store-level attributes.
ATTR_FPS = "fps"
ATTR_INTRINSICS = "camera_intrinsics"  # {"width", "height", "fx", "fy", "cx", "cy"}
ATTR_T_BASE_CAM = "T_base_cam"  # 4x4 row-major camera pose in the base frame (OpenCV axes)
ATTR_SOURCE = "source"  # "twin", "robot", "video-import", "replay", "lerobot-import", ...
ATTR_FORMAT_VERSION = "format_version"
# The learner's replay store: "taken" = row t holds the action taken at t (the layout above);
# absent on replay stores written before 2026-12-06 (row t: the action that led to t).
ATTR_ACTION_ROW = "replay_action_row"

# Gymnasium observation dict keys (the image key matches the store key).
OBS_IMAGE = IMAGE
OBS_EE_POS = EE_POS
OBS_GRIPPER = GRIPPER
OBS_JOINT_POS = JOINT_POS
OBS_DEPTH = DEPTH  # the env's (H, W) float32 metres (EnvConfig.depth); stored as DEPTH above

ACTION_DIM = 4  # dx, dy, dz, gripper; each in [-1, 1]
