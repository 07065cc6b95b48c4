"""Twin speed: rendered env steps/s at 84 and 224 px, demo episodes per minute.

    .venv/bin/python benchmarks/bench_twin.py [--steps 600]

Baselines measured in the same run: the twin's physics alone (no rendering), and Meta-World
push-v3 rendered at the same size with shadows off (a widely used MuJoCo manipulation env).
Target on 2 cores: >= 150 rendered env steps/s at 84x84.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np


def twin_steps_per_s(size: int, steps: int, render: bool = True) -> float:
    from video2reward.sim.env import make_env

    env = make_env("push", image_size=size, seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
    if not render:  # physics + control only
        env._obs = lambda: {}  # type: ignore[method-assign]
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, _, trunc, _ = env.step(actions[i])
        if trunc:
            env.reset()
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def demo_episodes_per_min(episodes: int) -> float:
    from video2reward.sim.demos import DemoConfig, generate

    with tempfile.TemporaryDirectory() as d:
        cfg = DemoConfig(task="push", episodes=episodes, out=f"{d}/b.zarr", image_size=84)
        t0 = time.perf_counter()
        generate(cfg, progress=False)
        return episodes / (time.perf_counter() - t0) * 60


def metaworld_steps_per_s(size: int, steps: int) -> float | None:
    try:
        import gymnasium as gym
        import metaworld  # noqa: F401
    except ImportError:
        return None
    env = gym.make(
        "Meta-World/MT1",
        env_name="push-v3",
        seed=0,
        render_mode="rgb_array",
        camera_name="corner",
        width=size,
        height=size,
    )
    base = env.unwrapped
    base.model.light_castshadow[:] = 0
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        env.render()
        if term or trunc:
            env.reset()
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--episodes", type=int, default=10)
    args = ap.parse_args()
    physics = twin_steps_per_s(84, args.steps, render=False)
    r84 = twin_steps_per_s(84, args.steps)
    r224 = twin_steps_per_s(224, args.steps)
    mw = metaworld_steps_per_s(84, args.steps)
    eps = demo_episodes_per_min(args.episodes)
    target = "PASS" if r84 >= 150 else "BELOW"
    rows = [
        ("twin physics+control only", physics, "baseline"),
        ("twin rendered 84x84", r84, f"x{r84 / physics:.2f} of physics-only, {target} 150/s"),
        ("twin rendered 224x224", r224, f"x{r224 / physics:.2f} of physics-only"),
    ]
    if mw is not None:
        rows.append(("Meta-World push-v3 84x84", mw, f"baseline; twin 84x84 is x{r84 / mw:.2f}"))
    for name, value, note in rows:
        print(f"{name:<30} {value:8.1f} steps/s   {note}")
    print(
        f"{'push expert demos (120 steps)':<30} {eps:8.1f} episodes/min; "
        f"a 100-step episode takes {100 / r84:.2f} s"
    )


if __name__ == "__main__":
    main()
