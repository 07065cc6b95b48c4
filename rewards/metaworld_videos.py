"""Meta-World videos for reward evaluation: scripted experts and paired failures, in a zarr store.

    MUJOCO_GL=egl python -m video2reward.rewards.metaworld_videos push-v3 40 mw_push.zarr [--failed]

Needs the optional ``metaworld`` extra (metaworld 3.1.1, mujoco 3.3.0). Each episode picks one of
the environment's 50 fixed tasks (scene = goal and object positions), runs the official
scripted policy until success plus 5 frames (at most ``max_steps``), and records the corner
camera at 84x84 (rows flipped: that camera renders upside down; shadows off, ~3x faster).
``--failed`` also records, for the same scene, a run that follows the expert for half of the
expert's steps and then stands still. An episode is labelled successful when Meta-World's
``info["success"]`` was true at any step: on some tasks the flag holds only a few steps
(handle-press-v3: 5-7 steps after the press, then off), so the last step's flag would call
a completed press a failure. Paired episodes share ``notes = "task=<k>"``, so evaluation can
give both the same goal image.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore


def _make_env(name: str, size_px: int) -> Any:
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World/ environments)

    env = gym.make("Meta-World/MT1", env_name=name, seed=0, render_mode="rgb_array",
                   camera_name="corner", width=size_px, height=size_px)
    sim: Any = env.unwrapped
    sim.model.light_castshadow[:] = 0
    return env


def _task_wrapper(env: Any) -> Any:
    w = env
    while not hasattr(w, "tasks"):
        w = w.env
    return w


def _run(env: Any, policy: Any, task: Any, steps: int | None, follow: int | None,
         max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """One episode's frames and the environment's success flag at each step."""
    env.unwrapped.set_task(task)
    obs, _ = env.reset()
    frames, flags, first_success = [], [], -1
    n = steps or max_steps
    for t in range(n):
        action = policy.get_action(obs) if follow is None or t < follow else np.zeros(4)
        obs, _, _, _, info = env.step(np.clip(action, -1, 1))
        frames.append(env.render()[::-1].copy())
        flags.append(bool(info["success"]))
        if info["success"] and first_success < 0:
            first_success = t
        if steps is None and first_success >= 0 and t >= first_success + 5:
            break
    return np.stack(frames), np.array(flags)


def record(name: str, episodes: int, out: str, failed: bool = False, size_px: int = 84,
           max_steps: int = 150, first_task: int = 0) -> EpisodeStore:
    from metaworld.policies import ENV_POLICY_MAP

    env = _make_env(name, size_px)
    tasks = _task_wrapper(env)
    tasks.toggle_sample_tasks_on_reset(False)
    policy_cls: Any = ENV_POLICY_MAP[name]
    policy = policy_cls()
    store = EpisodeStore.create(out, fps=80.0, source="metaworld", overwrite=True)
    try:
        for i in range(episodes):
            k = (first_task + i) % len(tasks.tasks)
            frames, flags = _run(env, policy, tasks.tasks[k], None, None, max_steps)
            n = len(frames)
            store.append_episode({keys.IMAGE: frames}, task=name, success=bool(flags.any()),
                                 kind="expert", notes=f"task={k}")
            if failed:
                frames, flags = _run(env, policy, tasks.tasks[k], n, n // 2, max_steps)
                store.append_episode({keys.IMAGE: frames}, task=name, success=bool(flags.any()),
                                     kind="failed", notes=f"task={k}")
    finally:
        env.close()
    return store


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    flags = [a for a in args if a.startswith("--")]
    pos = [a for a in args if not a.startswith("--")]
    if len(pos) < 3:
        print(__doc__)
        return 2
    os.environ.setdefault("MUJOCO_GL", "egl")
    first = int(next((f.split("=")[1] for f in flags if f.startswith("--first-task=")), 0))
    store = record(pos[0], int(pos[1]), pos[2], failed="--failed" in flags, first_task=first)
    print(store.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
