"""Recorder core: rows and labels read back, crash (SIGKILL) and disk-full (real tmpfs) safety."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, EpisodeStoreError
from video2reward.robot.kinematics import quat_wxyz_from_rpy
from video2reward.robot.recorder import (
    Observation,
    Recorder,
    RecorderConfig,
    RecorderError,
)
from video2reward.robot.recorder_cli import store_info

INTR = {"width": 8.0, "height": 8.0, "fx": 10.0, "fy": 10.0, "cx": 4.0, "cy": 4.0}


def _obs(i: int, t0: float = 1000.0) -> Observation:
    return Observation(
        image=np.full((8, 8, 3), i % 256, np.uint8),
        ee_pos_m=np.array([0.3 + i * 1e-3, 0.0, 0.2]),
        ee_quat_wxyz=np.array([0.0, 1.0, 0.0, 0.0]),
        joint_pos_rad=np.full(5, i * 0.01),
        gripper_open_frac=1.0,
        t_wall_s=t0 + i / 30,
        frame_number=i,
    )


def _cfg(path, **kw) -> RecorderConfig:
    return RecorderConfig(out=str(path), task="push", source="twin", min_free_mb=0.0, **kw)


def test_episodes_read_back_with_commands_labels_notes_and_intrinsics(tmp_path):
    out = tmp_path / "d.zarr"
    with Recorder(_cfg(out, flush_every=4), INTR) as rec:
        for ep, (n, ok) in enumerate([(10, True), (7, False)]):
            assert rec.start(notes=f"note {ep}") == ep
            for i in range(n):
                rec.observe(_obs(i))
                if i < n - 1:
                    rec.command(np.array([i / 10, -0.5, 0.25, 1.0]))
            assert "REC" in rec.status_line()
            assert rec.stop(success=ok) == ep
        rec.start()
        rec.observe(_obs(0))
        rec.discard()  # never reaches the index
        assert rec.status().saved == 2
    s = EpisodeStore.open(out)
    assert s.n_episodes == 2
    assert s.attrs[keys.ATTR_INTRINSICS] == INTR
    assert s.attrs[keys.ATTR_SOURCE] == "twin"
    for ep, (n, ok) in enumerate([(10, True), (7, False)]):
        meta, data = s.episode_meta(ep), s.episode(ep)
        assert meta["length"] == n
        assert meta[keys.EPISODE_SUCCESS] is ok
        assert meta[keys.EPISODE_NOTES] == f"note {ep}"
        assert meta[keys.EPISODE_KIND] == "teleop"
        # Row t: the frame and the command sent after it; the last row carries no command.
        np.testing.assert_allclose(data[keys.ACTION][:-1, 0], np.arange(n - 1) / 10, atol=1e-6)
        np.testing.assert_array_equal(data[keys.ACTION][-1], np.zeros(4))
        np.testing.assert_array_equal(data[keys.IMAGE][:, 0, 0, 0], np.arange(n))
        np.testing.assert_allclose(data[keys.TIMESTAMP], np.arange(n) / 30, atol=1e-9)


def test_mark_relabels_running_and_last_episode_and_gaps_count_as_dropped(tmp_path):
    with Recorder(_cfg(tmp_path / "d.zarr"), INTR) as rec:
        rec.start()
        for i in (0, 1, 4, 5):  # frames 2 and 3 never arrived
            rec.observe(_obs(i))
            if i == 1:  # two commands before the next frame
                rec.command(np.array([0.5, 0.0, -0.25, 1.0]))
                rec.command(np.array([0.75, 0.0, -0.25, -1.0]))
        rec.mark(True)
        assert rec.status().dropped == 2
        assert rec.stop() == 0  # label from mark()
        assert rec.mark(False) == 0  # relabel after the fact
        with pytest.raises(RecorderError, match="not recording"):
            rec.stop()
        assert rec.merged_commands == 1
    s = EpisodeStore.open(tmp_path / "d.zarr")
    assert s.episode_meta(0)[keys.EPISODE_SUCCESS] is False
    # The deltas add up (clipped), the later gripper command wins.
    np.testing.assert_allclose(s.episode(0)[keys.ACTION][1], [1.0, 0.0, -0.5, -1.0])


def test_other_camera_into_same_store_is_refused(tmp_path):
    with Recorder(_cfg(tmp_path / "d.zarr"), INTR) as rec:
        rec.start()
        rec.observe(_obs(0))
        rec.stop()
    with pytest.raises(RecorderError, match="intrinsics"):
        Recorder(_cfg(tmp_path / "d.zarr"), {**INTR, "fx": 11.0}).open()


def test_quaternion_of_tool_down_pose():
    # roll = pi (tool pointing down) is a half turn about x: (w, x, y, z) = (0, 1, 0, 0).
    np.testing.assert_allclose(quat_wxyz_from_rpy(np.array([np.pi, 0, 0])), [0, 1, 0, 0], atol=1e-6)
    q = quat_wxyz_from_rpy(np.array([0.3, -0.2, 1.1]))
    assert abs(np.linalg.norm(q) - 1) < 1e-6


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, time, numpy as np
    from video2reward.robot.recorder import Observation, Recorder, RecorderConfig
    out, episodes = sys.argv[1], int(sys.argv[2])
    cfg = RecorderConfig(out=out, task="push", source="twin", min_free_mb=0.0, flush_every=8)
    rec = Recorder(cfg, {"width": 8, "height": 8, "fx": 10, "fy": 10, "cx": 4, "cy": 4})
    rec.open()
    print("recovered", rec.recovered_rows, flush=True)
    def obs(i):
        return Observation(np.full((8, 8, 3), i, np.uint8), np.zeros(3), np.array([0, 1, 0, 0]),
                           np.zeros(5), 1.0, time.time(), i)
    for ep in range(episodes):
        rec.start()
        for i in range(20):
            rec.observe(obs(i)); rec.command(np.full(4, ep / 10))
        print("saved", rec.stop(success=True), flush=True)
    rec.start(notes="killed")
    i = 0
    while True:  # until SIGKILL
        rec.observe(obs(i % 256)); rec.command(np.full(4, 0.5)); i += 1
        if i == 40:
            print("midway", flush=True)
        time.sleep(0.002)
    """
)


def test_sigkill_mid_episode_keeps_earlier_episodes_and_a_second_recorder_appends(tmp_path):
    out = tmp_path / "d.zarr"
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), "2"], stdout=subprocess.PIPE, text=True
    )
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("midway"):
                break
        time.sleep(0.3)  # some chunks of the third episode reach the disk
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert lines[1:3] == ["saved 0", "saved 1"]
    before = EpisodeStore.open(out)  # read-only open works on the crashed store
    assert before.n_episodes == 2
    assert store_info(before)["unfinished_rows"] >= 8  # `v2r record info` shows the crash
    assert max(before.root["data"][k].shape[0] for k in before.data_keys) > before.n_steps
    for ep in range(2):
        d = before.episode(ep)
        assert len(d[keys.IMAGE]) == 20
        np.testing.assert_array_equal(d[keys.IMAGE][:, 0, 0, 0], np.arange(20))
        np.testing.assert_allclose(d[keys.ACTION][:-1], ep / 10)
    # A second recorder opens it, drops the crashed rows and appends.
    second = subprocess.Popen(
        [sys.executable, str(script), str(out), "1"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert second.stdout is not None
        first = second.stdout.readline().split()
        assert first[0] == "recovered" and int(first[1]) >= 8  # at least one chunk dropped
        assert second.stdout.readline().strip() == "saved 2"
    finally:
        second.kill()  # it records a fourth episode until killed
        second.wait(timeout=10)
    after = EpisodeStore.open(out)
    assert after.n_episodes == 3
    assert [after.episode_meta(i)["length"] for i in range(3)] == [20, 20, 20]
    np.testing.assert_allclose(after.episode(2)[keys.ACTION][:-1], 0.0)


DISK_FULL_SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys, time, numpy as np
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.robot.recorder import Observation, Recorder, RecorderConfig, RecorderError
    base = sys.argv[1]
    results = []
    rng = np.random.default_rng(0)
    for size_kb in range(180, 260, 8):
        mnt = f"{base}/fs{size_kb}"
        os.makedirs(mnt)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", mnt],
                       check=True)
        out = f"{mnt}/d.zarr"
        cfg = RecorderConfig(out=out, task="t", source="twin", min_free_mb=0.0, flush_every=5)
        saved, error, digests = [], None, []
        with Recorder(cfg) as rec:
            for ep in range(100):
                rec.start()
                imgs = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)  # incompressible
                for i, im in enumerate(imgs):
                    rec.observe(Observation(im, np.zeros(3), np.array([0, 1, 0, 0]),
                                            np.zeros(5), 1.0, float(i), i))
                    rec.command(np.full(4, ep / 100))
                try:
                    saved.append(rec.stop(success=ep % 2 == 0))
                    digests.append(int(imgs.astype(np.int64).sum()))
                except RecorderError as e:
                    error = str(e)
                    break
            status = rec.status()
        s = EpisodeStore.open(out)
        ok = s.n_episodes == len(saved) and all(
            int(s.episode(i)["img"].astype(np.int64).sum()) == digests[i]
            and s.episode_meta(i)["episode_success"] == (i % 2 == 0)
            and s.episode_meta(i)["length"] == 12
            for i in range(len(saved)))
        EpisodeStore.open(out, mode="a")  # appending works after the failure
        results.append({"size_kb": size_kb, "saved": len(saved), "error": error,
                        "intact": ok, "recording": status.recording, "status": status.error})
    print(json.dumps(results))
    """
)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_disk_full_is_reported_stops_recording_and_keeps_earlier_episodes(tmp_path):
    """A real full filesystem: tmpfs of several sizes in a private mount namespace."""
    script = tmp_path / "full.py"
    script.write_text(DISK_FULL_SCRIPT)
    base = tmp_path / "mnt"
    base.mkdir()
    r = subprocess.run(
        ["unshare", "-rm", sys.executable, str(script), str(base)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    if r.returncode != 0 and "unshare" in r.stderr and "Operation not permitted" in r.stderr:
        pytest.skip("user namespaces are disabled here")
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(results) == 10
    for res in results:
        assert res["error"] is not None and "disk full" in res["error"], res
        assert res["saved"] >= 1, res
        assert res["intact"], res
        assert res["recording"] is False
        assert "disk full" in res["status"]
    assert len({r["saved"] for r in results}) > 1  # the failure landed at different points


def test_episode_left_running_stops_at_max_episode_s_and_the_next_one_records(tmp_path):
    now = [0.0]
    cfg = _cfg(tmp_path / "d.zarr", max_episode_s=1.0)
    with Recorder(cfg, INTR, clock=lambda: now[0]) as rec:
        rec.start(notes="forgotten")
        for i in range(40):  # 1.3 s of frames; the episode ends after 1.0 s
            now[0] = i / 30
            rec.observe(_obs(i))
        assert not rec.recording
        rec.start()
        for i in range(3):
            rec.observe(_obs(i))
        assert rec.stop(success=True) == 1  # not the auto-stop's answer
    s = EpisodeStore.open(tmp_path / "d.zarr")
    assert s.n_episodes == 2
    m0 = s.episode_meta(0)
    assert m0["length"] == 31 and m0[keys.EPISODE_SUCCESS] is False
    assert m0[keys.EPISODE_NOTES] == "forgotten; stopped at max_episode_s"
    assert s.episode_meta(1)["length"] == 3


def test_a_commit_cut_by_a_full_disk_is_cut_from_the_index_on_open(tmp_path):
    """zarr grows meta/episode_ends' shape before writing its chunk; if that chunk write fails
    the index claims an extra episode ending at the fill value 0. The recorder repairs it."""
    out = tmp_path / "d.zarr"
    with Recorder(_cfg(out), INTR) as rec:
        for _ in range(2):
            rec.start()
            for i in range(5):
                rec.observe(_obs(i))
            rec.stop(success=True)
    import zarr

    meta = zarr.open_group(str(out), mode="r+")["meta"]
    for k in meta.array_keys():  # the commit wrote every meta row, the ends chunk failed
        meta[k].resize((3,))
    with pytest.raises(EpisodeStoreError, match="damaged"):  # a reader is told, not misled
        EpisodeStore.open(out)
    with Recorder(_cfg(out), INTR) as rec:
        assert rec.repaired_index == 1
        rec.start()
        for i in range(4):
            rec.observe(_obs(i))
        assert rec.stop() == 2
    s = EpisodeStore.open(out)
    assert [s.episode_meta(i)["length"] for i in range(3)] == [5, 5, 4]


def test_depth_is_recorded_in_millimetres_with_the_camera_pose_and_never_left_out(tmp_path):
    import dataclasses

    out = tmp_path / "d.zarr"
    T = np.eye(4)
    T[:3, 3] = [0.8, -0.5, 0.6]
    with Recorder(_cfg(out, flush_every=2, depth=True), INTR, T_base_cam=T) as rec:
        rec.start()
        for i in range(5):
            obs = dataclasses.replace(_obs(i), depth_m=np.full((8, 8), 0.5 + i * 0.001))
            if i == 2:  # a frame whose depth did not come is dropped, not stored without
                obs = dataclasses.replace(obs, depth_m=None)
            rec.observe(obs)
        assert rec.status().dropped >= 1
        rec.stop(success=True)
    s = EpisodeStore.open(out)
    assert s.attrs[keys.ATTR_T_BASE_CAM] == T.tolist()
    d = s.episode(0)[keys.DEPTH]
    assert d.dtype == np.uint16 and d.shape == (4, 8, 8)
    np.testing.assert_array_equal(d[:, 0, 0], [500, 501, 503, 504])
    # a store recorded with depth takes no episodes without (and the other way round)
    with pytest.raises(RecorderError, match="with depth"), Recorder(_cfg(out), INTR):
        pass
