"""A real full disk under the replay store: the commit that does not fit fails loudly, and
every episode committed before it survives, readable and unchanged, for a restarted learner.

The store lives on a 3 MiB tmpfs mounted in a private user + mount namespace
(``unshare -rm``, no real privileges), filled by episodes of incompressible pixels; the scenario
runs as ``python this_file.py DIR`` inside it and prints one JSON line.
"""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

TMPFS_MB = 3


def scenario(root: str) -> dict[str, Any]:
    from video2reward.data import keys
    from video2reward.data.episode_store import EpisodeStore
    from video2reward.policies.replay import STORE_NAME, ReplayBuffer, ReplayConfig

    rng = np.random.default_rng(0)
    cfg = ReplayConfig(capacity_steps=10_000)
    rb = ReplayBuffer(cfg, (3, 32, 32), action_dim=4, proprio_dim=4, directory=root)
    written: list[np.ndarray] = []  # the frames of each committed episode
    r: dict[str, Any] = {}
    for _ in range(200):
        frames = rng.integers(0, 256, (21, 3, 32, 32), np.uint8)  # incompressible
        rb.start_episode(frames[0], np.zeros(4, np.float32))
        for t in range(1, len(frames)):
            rb.add(rng.uniform(-1, 1, 4).astype(np.float32), 0.1, frames[t],
                   np.zeros(4, np.float32))  # fmt: skip
        try:
            rb.end_episode(success=False)
        except OSError as e:
            r["error_errno"], r["error"] = e.errno, f"{type(e).__name__}: {e}"
            break
        written.append(frames)
    r["committed"] = len(written)
    r["sampleable_episodes"] = rb.n_episodes
    # A restarted learner: reopen for appending (drops a cut-short commit), then restore.
    store = EpisodeStore.open(f"{root}/{STORE_NAME}", mode="a")
    r["episodes_on_disk"] = store.n_episodes
    r["all_frames_equal"] = all(
        np.array_equal(np.asarray(store.episode(i, [keys.IMAGE])[keys.IMAGE]),
                       written[i].transpose(0, 2, 3, 1))
        for i in range(min(store.n_episodes, len(written)))
    )
    rb2 = ReplayBuffer(cfg, (3, 32, 32), action_dim=4, proprio_dim=4, directory=root)
    r["restored_steps"] = rb2.restore()
    r["restored_episodes"] = rb2.n_episodes
    return r


def _namespaces_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _namespaces_available(), reason="needs unprivileged user namespaces")
def test_full_disk_fails_the_commit_loudly_and_loses_nothing_committed(tmp_path: Any) -> None:
    mnt = tmp_path / "small_disk"
    mnt.mkdir()
    script = (f'mount -t tmpfs -o size={TMPFS_MB}m tmpfs "$0" && exec "$1" "$2" "$0"')
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, str(mnt), sys.executable,
                           __file__], capture_output=True, text=True, timeout=120, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, f"scenario failed:\n{proc.stdout}\n{proc.stderr}"
    r = json.loads(lines[-1])
    assert r.get("error_errno") == errno.ENOSPC, r  # the commit that did not fit raised
    assert r["committed"] >= 5  # ~60 KiB per episode: the disk filled after dozens
    assert r["sampleable_episodes"] == r["committed"]  # the failed one is never trained on
    assert r["episodes_on_disk"] == r["committed"], r
    assert r["all_frames_equal"]
    assert r["restored_episodes"] == r["committed"]
    assert r["restored_steps"] == 20 * r["committed"]


if __name__ == "__main__":
    print(json.dumps(scenario(sys.argv[1])), flush=True)
