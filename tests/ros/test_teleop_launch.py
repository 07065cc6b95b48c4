"""launch/teleop_record.launch.xml in the twin through ``v2r launch``: keys typed into the
launcher's terminal home the arm, enable it, record one episode and quit.

The twin node serves the xArm protocol and renders the arm it simulates, so the recorded
frames show the motion the keys commanded.
"""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

# Keys typed into a pty are held for time windows, so under CPU load a run can see fewer
# held frames than the assertions need; a failed run is retried (at most twice) rather than
# loosening them. Known issue: make these scenarios event-driven instead of timed.
pytestmark = [pytest.mark.ros, pytest.mark.netns, pytest.mark.flaky(reruns=2)]
LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "teleop_record.launch.xml"


def test_launch_file_records_a_keyboard_episode_in_the_twin(tmp_path: Path) -> None:
    from video2reward.data import keys
    from video2reward.data.episode_store import EpisodeStore

    out = tmp_path / "t.zarr"
    master, slave = pty.openpty()
    env = dict(os.environ, ROS_DOMAIN_ID="73")
    cmd = [
        sys.executable,
        "-m",
        "video2reward.cli.main",
        "launch",
        str(LAUNCH),
        f"out:={out}",
        "task:=reach",
        "flush_every:=8",
        "notes:=launch test",
    ]
    proc = subprocess.Popen(
        cmd,
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    log: list[str] = []
    assert proc.stdout is not None
    threading.Thread(target=lambda: log.extend(proc.stdout or []), daemon=True).start()

    def wait_for(text: str, timeout_s: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in ln for ln in log):
                return True
            time.sleep(0.1)
        return False

    def key(data: bytes, pause_s: float = 0.0) -> None:
        os.write(master, data)
        time.sleep(pause_s)

    try:
        assert wait_for("[recorder]") and wait_for("store "), "".join(log)
        time.sleep(1.0)
        for _ in range(6):  # home; the driver's service may not be up yet
            key(b"o")
            if wait_for("home: home: ok", 5):
                break
        assert wait_for("home: home: ok", 1), "".join(log)
        key(b"e", 0.5)
        key(b"\r", 0.5)
        for _ in range(30):  # hold w for 1 s
            key(b"w", 1 / 30)
        key(b"", 0.3)
        key(b"y")
        assert wait_for("recorder/stop: stop: 0", 20), "".join(log)
        key(b"q", 1.0)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, "".join(log[-40:])
    s = EpisodeStore.open(out)
    assert s.n_episodes == 1 and s.episode_meta(0)[keys.EPISODE_SUCCESS] is True
    assert s.episode_meta(0)[keys.EPISODE_NOTES] == "launch test"
    ep = s.episode(0)
    assert ep[keys.EE_POS][-1, 0] - ep[keys.EE_POS][0, 0] > 0.05, "".join(log[-60:])  # +x (w key)
    assert (ep[keys.ACTION][:, 0] > 0.1).sum() >= 15
    # The camera sees the twin it simulates: the arm moved in the images too.
    diff = np.abs(ep[keys.IMAGE][0].astype(int) - ep[keys.IMAGE][-1].astype(int)).mean()
    assert diff > 2.0
