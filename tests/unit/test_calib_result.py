"""Calibration YAML (round trip, bad files), workspace tool, intrinsics sources and v2r calib."""

import dataclasses
import re

import numpy as np
import pytest
import yaml
from video2reward.calibration.board import BoardMount, CharucoBoardSpec
from video2reward.calibration.intrinsics import (
    IntrinsicsConfig,
    IntrinsicsError,
    estimate_intrinsics,
    factory_intrinsics,
)
from video2reward.calibration.result import (
    CalibrationFileError,
    CalibrationResult,
    ExtrinsicsRecord,
    IntrinsicsRecord,
    camera_pose,
    load_calibration,
    save_calibration,
    to_dict,
    update_calibration,
)
from video2reward.calibration.sim_rig import TwinArm, TwinArmConfig
from video2reward.calibration.workspace import (
    WorkspaceToolConfig,
    box_from_corners,
    jog_and_record,
)
from video2reward.cli.main import main as v2r
from video2reward.robot.camera import CameraIntrinsics
from video2reward.robot.safety import EnvelopeConfig, WorkspaceBox
from video2reward.sim.twin import CameraConfig, XArm5Twin


def full_result() -> CalibrationResult:
    T = CameraConfig().T_base_cam()
    Y = np.eye(4)
    Y[:3, 3] = [0.1, 0.0, 0.05]
    return CalibrationResult(
        date_utc="2026-11-24T05:00:00+00:00",
        source="twin",
        camera=IntrinsicsRecord(
            CameraIntrinsics(640, 480, 615.2, 615.9, 320.1, 239.7, coeffs=(0.01, -0.02, 0, 0, 0)),
            "handeye",
            0.08,
        ),
        extrinsics=ExtrinsicsRecord(T, Y, CharucoBoardSpec(), 0.05, {"rms_trans_mm": 0.5}),
        workspace=WorkspaceBox((0.2, -0.2, 0.01), (0.5, 0.2, 0.3)),
    )


def test_yaml_round_trip_keeps_every_number(tmp_path):
    cal = full_result()
    p = save_calibration(cal, tmp_path / "cal.yaml")
    back = load_calibration(p)
    np.testing.assert_array_equal(back.extrinsics.T_base_cam, cal.extrinsics.T_base_cam)
    np.testing.assert_array_equal(back.extrinsics.T_flange_board, cal.extrinsics.T_flange_board)
    assert back.camera == cal.camera
    assert back.workspace == cal.workspace
    assert back.extrinsics.board == cal.extrinsics.board
    assert back.extrinsics.board_z_flange_m == 0.05
    assert back.extrinsics.residuals == {"rms_trans_mm": 0.5}
    assert to_dict(back) == to_dict(cal)


def test_a_depth_recorder_gets_the_hand_eye_pose_or_a_clear_refusal(tmp_path):
    p = save_calibration(full_result(), tmp_path / "cal.yaml")
    np.testing.assert_array_equal(camera_pose(p, depth=True), full_result().extrinsics.T_base_cam)
    no_pose = save_calibration(dataclasses.replace(full_result(), extrinsics=None),
                               tmp_path / "no_pose.yaml")  # fmt: skip
    assert camera_pose(no_pose) is None and camera_pose("") is None  # colour only: no pose
    with pytest.raises(ValueError, match=r"no_pose\.yaml has no hand-eye extrinsics"):
        camera_pose(no_pose, depth=True)
    with pytest.raises(ValueError, match="no calibration file was given"):
        camera_pose("", depth=True)


def test_updating_one_section_keeps_the_others(tmp_path):
    p = save_calibration(full_result(), tmp_path / "cal.yaml")
    box = WorkspaceBox((0.25, -0.1, 0.02), (0.45, 0.1, 0.2))
    update_calibration(p, "workspace tool", workspace=box)
    back = load_calibration(p)
    assert back.workspace == box
    assert back.camera == full_result().camera
    np.testing.assert_array_equal(back.extrinsics.T_base_cam, full_result().extrinsics.T_base_cam)
    assert back.source == "workspace tool" and back.date_utc != full_result().date_utc


def _write(tmp_path, mutate):
    raw = to_dict(full_result())
    mutate(raw)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _set(path, value):
    def mutate(raw):
        d = raw
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda raw: raw.pop("format_version"), "missing 'format_version'"),
        (_set(["format_version"], 2), "format_version 2 is not supported"),
        (_set(["extrinsics", "T_base_cam"], [[1, 0, 0], [0, 1, 0]]), "T_base_cam must be a"),
        (
            _set(["extrinsics", "T_base_cam"], (np.diag([1.0, 1.0, 2.0, 1.0])).tolist()),
            "T_base_cam: the 3x3 block is not a rotation",
        ),
        (
            _set(
                ["extrinsics", "T_flange_board"],
                [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]],
            ),
            r"T_flange_board: last row must be \[0, 0, 0, 1\]",
        ),
        (_set(["camera", "fx"], -1.0), "fx and fy must be positive"),
        (_set(["camera", "cx"], 900.0), "principal point"),
        (lambda raw: raw["camera"].pop("fy"), r"'camera' is missing \['fy'\]"),
        (_set(["camera", "focal"], 1.0), r"'camera' has unknown keys \['focal'\]"),
        (_set(["workspace", "lo_m"], [0.6, -0.2, 0.0]), "must be below hi_m"),
        (_set(["extrinsics", "board"], {"squares_x": 2}), "squares per side"),
        (_set(["extra"], 1), r"unknown top-level keys \['extra'\]"),
    ],
)
def test_bad_files_are_refused_with_the_key_named(tmp_path, mutate, match):
    p = _write(tmp_path, mutate)
    with pytest.raises(CalibrationFileError, match=match):
        load_calibration(p)


def test_missing_and_non_yaml_files_are_refused(tmp_path):
    with pytest.raises(CalibrationFileError, match="does not exist"):
        load_calibration(tmp_path / "nope.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("camera: [unclosed\n")
    with pytest.raises(CalibrationFileError, match="not valid YAML"):
        load_calibration(p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(CalibrationFileError, match="YAML mapping"):
        load_calibration(p)


# ----------------------------------------------------------------------------- workspace
def test_box_is_the_bounds_of_the_corners():
    pts = [np.array([0.2, -0.2, 0.02]), np.array([0.5, 0.2, 0.3]), np.array([0.3, 0.0, 0.1])]
    box = box_from_corners(pts, WorkspaceToolConfig())
    np.testing.assert_allclose(box.lo, [0.2, -0.2, 0.02])
    np.testing.assert_allclose(box.hi, [0.5, 0.2, 0.3])


@pytest.mark.parametrize(
    ("pts", "match"),
    [
        ([[0.3, 0.0, 0.1]], "need >= 2"),
        ([[0.2, -0.2, 0.1], [0.5, 0.2, 0.12]], r"less than 5 cm along \['z'\]"),
        ([[0.2, -0.2, -0.05], [0.5, 0.2, 0.3]], "below min_z_m"),
        ([[0.2, -0.2, 0.05], [0.9, 0.2, 0.3]], "out of the tool-down reach"),
        ([[0.2, -0.2, np.nan], [0.5, 0.2, 0.3]], "finite"),
    ],
)
def test_bad_corner_sets_are_refused(pts, match):
    with pytest.raises(ValueError, match=match):
        box_from_corners([np.asarray(p) for p in pts], WorkspaceToolConfig())


def test_jogging_through_the_arm_records_corners_and_respects_the_jog_box():
    jog_box = WorkspaceBox((0.2, -0.2, 0.05), (0.45, 0.2, 0.3))
    script = iter(["r", "x+ 3", "z- 2", "r", "y- 30", "r", "bogus", "d"])
    said = []
    with XArm5Twin() as twin:
        twin.reset()  # READY: tool at (0.35, 0, 0.20)
        arm = TwinArm(twin, TwinArmConfig(envelope=EnvelopeConfig(box=jog_box)))
        # The twin advances 0.1 s of physics per step itself: no wall-clock pacing needed.
        corners = jog_and_record(arm, lambda _: next(script), said.append, sleep=lambda _: None)
    assert len(corners) == 3
    np.testing.assert_allclose(corners[0], [0.35, 0.0, 0.20], atol=2e-3)
    # 3 x 10 mm in x and 2 x 10 mm down (the twin's servo lags each step by a little).
    np.testing.assert_allclose(corners[1] - corners[0], [0.03, 0.0, -0.02], atol=3e-3)
    # 30 steps asked, stopped at the box less the envelope's margin
    assert corners[2][1] == pytest.approx(-0.2 + EnvelopeConfig().margin_m, abs=2e-3)
    assert any("clamped" in s for s in said)
    assert any("unknown command 'bogus'" in s for s in said)


# ----------------------------------------------------------------------------- intrinsics
def test_too_few_intrinsics_views_is_a_clear_error():
    from video2reward.calibration.board import BoardDetection

    empty = BoardDetection(np.zeros((0, 2)), np.zeros(0, int), (640, 480))
    with pytest.raises(IntrinsicsError, match=r"seen .* in 0 of 5 images, need >= 8"):
        estimate_intrinsics([empty] * 5, CharucoBoardSpec(), IntrinsicsConfig())


def test_factory_intrinsics_read_from_a_realsense_recording(tmp_path):
    from video2reward.robot.realsense import RealSenseConfig, write_recording

    intr = CameraIntrinsics(64, 48, 60.5, 61.0, 31.7, 23.2)
    frames = [np.full((48, 64, 3), k * 40, np.uint8) for k in range(3)]
    path = tmp_path / "cam.db3"
    write_recording(path, frames, fps=30, intrinsics=intr)
    got = factory_intrinsics(
        RealSenseConfig(recording=str(path), width=64, height=48, real_time=False)
    )
    assert (got.width, got.height) == (64, 48)
    np.testing.assert_allclose(
        [got.fx, got.fy, got.cx, got.cy], [60.5, 61.0, 31.7, 23.2], rtol=1e-6
    )


# ----------------------------------------------------------------------------- CLI
def test_cli_show_and_workspace_write_and_read_one_file(tmp_path, capsys):
    p = tmp_path / "cal.yaml"
    rc = v2r(["calib", "workspace", f"out={p}", "corners=[[0.2,-0.2,0.02],[0.5,0.2,0.3]]"])
    assert rc == 0
    assert load_calibration(p).workspace == WorkspaceBox((0.2, -0.2, 0.02), (0.5, 0.2, 0.3))
    assert v2r(["calib", "show", f"file={p}"]) == 0
    out = capsys.readouterr().out
    assert "workspace: lo [0.2, -0.2, 0.02] m" in out
    assert "camera: (none) -> v2r calib intrinsics" in out


def test_cli_errors_have_exit_codes(tmp_path, capsys):
    assert v2r(["calib", "show", f"file={tmp_path / 'none.yaml'}"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert v2r(["calib", "handeye", "backend=xarm", "camera=realsense"]) == 2
    assert "board_z_flange_m is required" in capsys.readouterr().err
    p = tmp_path / "cal.yaml"
    assert v2r(["calib", "workspace", f"out={p}", "corners=[[0.2,-0.2,0.1],[0.5,0.2,0.11]]"]) == 1
    err = capsys.readouterr().err
    assert "less than 5 cm" in err and "reuse with corners=" in err
    assert not p.exists()
    p.write_text("format_version: 7\n")  # a broken file fails before any jogging
    assert v2r(["calib", "workspace", f"out={p}", "backend=xarm", "ip=10.255.255.1"]) == 1
    assert "format_version 7 is not supported" in capsys.readouterr().err


def test_cli_handeye_in_the_twin_writes_a_calibration_close_to_the_truth(tmp_path, capsys):
    p = tmp_path / "cal.yaml"
    save_calibration(dataclasses.replace(full_result(), camera=None, extrinsics=None), p)
    shots = tmp_path / "shots"
    rc = v2r(
        ["calib", "handeye", f"out={p}", "n_views=12", "facing_yaw_deg=-45", f"save_dir={shots}"]
    )
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "twin ground truth: camera error" in out
    cal = load_calibration(p)
    assert cal.workspace == full_result().workspace  # kept, and used as the pose box
    err = np.linalg.norm(cal.extrinsics.T_base_cam[:3, 3] - CameraConfig().T_base_cam()[:3, 3])
    assert err < 2e-3
    assert cal.camera.source == "handeye"
    assert cal.camera.intrinsics.fx == pytest.approx(CameraConfig().intrinsics()["fx"], rel=0.01)
    assert v2r(["calib", "show", f"file={p}"]) == 0
    shown = re.search(r"twin camera: CameraConfig\(eye_m=\[([^\]]*)\]", capsys.readouterr().out)
    assert shown is not None
    np.testing.assert_allclose(
        [float(v) for v in shown.group(1).split(",")], [0.8, -0.5, 0.6], atol=2e-3
    )

    # The saved run solves again without arm or camera, to the same answer.
    p2 = tmp_path / "replayed.yaml"
    z = BoardMount().T_flange_board(CharucoBoardSpec())[2, 3]
    rc = v2r(
        [
            "calib",
            "handeye",
            "backend=replay",
            f"data={shots}",
            f"board_z_flange_m={z}",
            f"out={p2}",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    np.testing.assert_allclose(
        load_calibration(p2).extrinsics.T_base_cam,
        load_calibration(p).extrinsics.T_base_cam,
        atol=1e-9,
    )
    assert "replay of" in load_calibration(p2).source

    # The saved views also calibrate the intrinsics alone (ChArUco photos from any source).
    assert len(list(shots.glob("view_*.png"))) == 12
    assert v2r(["calib", "intrinsics", "source=images", f"images={shots}", f"out={p}"]) == 0
    cal = load_calibration(p)
    assert cal.camera.source == "charuco" and cal.camera.reprojection_rms_px < 0.3
    assert cal.camera.intrinsics.fx == pytest.approx(CameraConfig().intrinsics()["fx"], rel=0.03)
    assert cal.extrinsics is not None and cal.workspace is not None  # other sections kept


def test_calibration_core_imports_without_ros():
    # ROS stays in calibration/ros/: the CLI, the twin rig and the solvers run without rclpy.
    code = (
        "import sys, pkgutil, importlib, video2reward.calibration as c\n"
        "names = [m.name for m in pkgutil.walk_packages(c.__path__, c.__name__ + '.')\n"
        "         if '.ros' not in m.name]\n"
        "for n in names: importlib.import_module(n)\n"
        "print(len(names), 'rclpy' in sys.modules)\n"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    n, has_rclpy = out.stdout.split()
    assert int(n) >= 8 and has_rclpy == "False"


def test_the_driver_uses_the_calibrated_workspace_and_refuses_a_file_without_one(tmp_path):
    from video2reward.calibration.result import driver_workspace

    box, source = driver_workspace("", (0.2, -0.25, 0.005), (0.55, 0.25, 0.3))
    assert box.lo_m == (0.2, -0.25, 0.005) and source == "parameters"
    path = tmp_path / "calibration.yaml"
    measured = WorkspaceBox(lo_m=(0.25, -0.1, 0.02), hi_m=(0.45, 0.12, 0.2))
    update_calibration(path, "workspace tool", workspace=measured)
    box, source = driver_workspace(path, (0.2, -0.25, 0.005), (0.55, 0.25, 0.3))
    assert box == measured and str(path) in source
    update_calibration(path, "workspace tool", workspace=None)
    with pytest.raises(CalibrationFileError, match="no workspace section"):
        driver_workspace(path, (0.2, -0.25, 0.005), (0.55, 0.25, 0.3))
    with pytest.raises(CalibrationFileError, match="does not exist"):
        driver_workspace(tmp_path / "missing.yaml", (0.2, -0.25, 0.005), (0.55, 0.25, 0.3))
