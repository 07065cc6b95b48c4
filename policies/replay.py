"""Replay for DrQ-v2: an in-memory ring of single frames with episode boundaries, n-step sampling.

    replay = ReplayBuffer(ReplayConfig(capacity_steps=100_000), obs_shape=(3, 84, 84),
                          action_dim=4, proprio_dim=4, directory="runs/x/replay")
    replay.start_episode(obs, proprio)                     # obs: one frame, (3, H, W) uint8
    replay.add(action, reward, next_obs, next_proprio, terminated=False)   # per agent step
    replay.end_episode(success=True)                       # committed: sampleable + on disk
    batch = replay.sample(256)                             # Batch of frame-stacked n-step data

Frames are stored once; stacks of ``frame_stack`` are gathered at sample time, repeating the
episode's first frame at its start (what a frame-stacking wrapper does at reset). Sampling is a
few vectorised numpy gathers in the calling thread: no DataLoader workers on 2 cores.

Only finished episodes are sampled. Near an episode's end the n-step return is shortened to the
steps that remain and bootstraps with gamma^m, so the last transitions (often the successful
ones) are trained on too; a terminal step (``terminated=True``) bootstraps with 0.

With ``directory`` set, every finished episode is appended to ``<directory>/episodes.zarr`` (the
project's episode layout: ``img`` in HWC, ``action``, ``reward``, ``cont``, ``proprio``; row t's
``action`` is the one taken at observation t, the last row's zero, as in recorded demos) before it
becomes sampleable, and :meth:`ReplayBuffer.restore` reloads the newest ``capacity_steps`` of them
after a crash. The same store doubles as a source of agent frames for reward training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from video2reward.data import keys
from video2reward.data.episode_store import EpisodeStore, shift_rows

STORE_NAME = "episodes.zarr"
FEATURES_KEY = "features"  # (T, D) float32 observation when it is not an image
PROPRIO_KEY = "proprio"  # (T, P) float32
REWARD_KEY = "reward"  # (T,) float32, reward received on arriving at step t (0 at t=0)
CONT_KEY = "cont"  # (T,) float32, 0 if step t is terminal, else 1
INTERVENED_KEY = "intervened"  # (T,) bool, row t's action came from an operator (see below)
# (T,) bool, the success call on arriving at row t (the reward model's or the operator's key;
# row 0 False), aligned with REWARD_KEY. Stores written before 2026-12-06 lack it.
CALLED_KEY = "success_called"
# Which action a stored row holds. In memory, slot t holds the action that *led to* observation
# t (DrQ-v2's time-step layout: row 0 zeros); stores written since 2026-12-06 shift it to the
# episode layout (data/keys.py: row t, the action taken at t; the last row zeros), so an export
# (LeRobot) or any reader of episode stores sees agent episodes as it sees demos. A store
# without this attribute was written in the in-memory layout and is read, and appended to, so.
ACTION_ROW_ATTR = keys.ATTR_ACTION_ROW  # "taken" (episode layout) or absent ("led_to")


class RestoredSteps(NamedTuple):
    """A restored episode that may have fed the demonstrations: an operator drove some steps,
    or the success call fired (flags per step)."""

    intervened: np.ndarray  # (n,) bool: the action of step t came from an operator
    called: np.ndarray  # (n,) bool: step t arrived where the success call fired
    frames: list[np.ndarray]  # n + 1 stored frames
    proprio: list[np.ndarray] | None  # n + 1, or None without proprio
    actions: list[np.ndarray]  # n applied actions
    rewards: np.ndarray  # (n,) the rewards the episode was stored with


class NonFiniteError(ValueError):
    """A NaN/inf reward, observation or loss; it is reported and never trained on."""


class Batch(NamedTuple):
    obs: np.ndarray  # (B, k*C, H, W) uint8 or (B, k*D) float32, k = frame_stack
    action: np.ndarray  # (B, A) float32, the action taken at obs
    reward: np.ndarray  # (B,) float32, sum_j gamma^j r_{t+1+j} over m <= nstep steps
    discount: np.ndarray  # (B,) float32, gamma^m times the continuation flags
    next_obs: np.ndarray  # like obs, m steps later
    proprio: np.ndarray | None  # (B, P) float32 at obs (not stacked)
    next_proprio: np.ndarray | None
    is_demo: np.ndarray | None = None  # (B,) float32, 1 for demonstration rows (BC term)


@dataclass(frozen=True)
class ReplayConfig:
    capacity_steps: int = 1_000_000  # stored agent steps (frames are stored once each)
    frame_stack: int = 3  # frames per observation (paper: 3)
    nstep: int = 3  # n of the n-step return (paper: 3)
    discount: float = 0.99  # per agent step

    def __post_init__(self) -> None:
        if self.capacity_steps < 2:
            raise ValueError(f"capacity_steps must be >= 2, got {self.capacity_steps}")
        if self.frame_stack < 1 or self.nstep < 1:
            raise ValueError(
                f"frame_stack and nstep must be >= 1, got {self.frame_stack}, {self.nstep}"
            )
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {self.discount}")


class ReplayBuffer:
    """Ring buffer over absolute step indices; slot = index % capacity."""

    def __init__(
        self,
        cfg: ReplayConfig,
        obs_shape: tuple[int, ...],
        action_dim: int,
        proprio_dim: int = 0,
        *,
        directory: str | Path | None = None,
        seed: int = 0,
        task: str = "",
        fps: float = 1.0,
    ):
        if len(obs_shape) not in (1, 3):
            raise ValueError(f"obs_shape must be (C, H, W) or (D,), got {obs_shape}")
        self.cfg = cfg
        self.obs_shape = tuple(int(s) for s in obs_shape)
        self.pixels = len(obs_shape) == 3
        self.action_dim = int(action_dim)
        self.proprio_dim = int(proprio_dim)
        self.task = task
        cap = cfg.capacity_steps
        # np.empty: pages are touched only as the ring fills.
        self._obs = np.empty((cap, *self.obs_shape), np.uint8 if self.pixels else np.float32)
        self._proprio = np.zeros((cap, self.proprio_dim), np.float32)
        self._action = np.zeros((cap, self.action_dim), np.float32)
        self._reward = np.zeros(cap, np.float32)
        self._cont = np.ones(cap, np.float32)
        self._next = 0  # absolute index of the next step to write
        self._ep_start: int | None = None  # absolute start of the episode being written
        self._starts: list[int] = []  # committed episodes, oldest first (absolute)
        self._ends: list[int] = []
        self._cum = np.zeros(0, np.int64)  # cumulative transitions per committed episode
        self._rng = np.random.default_rng(seed)
        self.n_episodes_total = 0  # committed since creation (incl. restored)
        self.store: EpisodeStore | None = None
        self._taken_rows = False  # the store's rows hold the action taken at them
        self.directory = None if directory is None else Path(directory)
        self._pending: dict[str, list[np.ndarray]] = {}
        self.restored_steps: list[RestoredSteps] = []  # filled by restore()
        if self.directory is not None:
            path = self.directory / STORE_NAME
            if path.exists():
                self.store = EpisodeStore.open(path, mode="a")
            else:
                self.directory.mkdir(parents=True, exist_ok=True)
                # fps: agent steps per second, the rate an export (LeRobot) plays rows at
                self.store = EpisodeStore.create(path, fps=fps, source="replay",
                                                 **{ACTION_ROW_ATTR: "taken"})  # fmt: skip
            self._taken_rows = self.store.attrs.get(ACTION_ROW_ATTR) == "taken"

    # ----------------------------------------------------------------- writing
    def _check(self, obs: np.ndarray, proprio: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        o = np.asarray(obs)
        if o.shape != self.obs_shape:
            raise ValueError(f"observation shape {o.shape} != replay's {self.obs_shape}")
        if not self.pixels and not np.isfinite(o).all():
            raise NonFiniteError("observation holds NaN/inf")
        p = (
            np.zeros(self.proprio_dim, np.float32)
            if proprio is None
            else np.asarray(proprio, np.float32)
        )
        if p.shape != (self.proprio_dim,):
            raise ValueError(f"proprio shape {p.shape} != ({self.proprio_dim},)")
        if not np.isfinite(p).all():
            raise NonFiniteError("proprioception holds NaN/inf")
        return o, p

    def _write(self, o: np.ndarray, p: np.ndarray, a: np.ndarray, r: float, cont: float) -> None:
        cap = self.cfg.capacity_steps
        if self._ep_start is not None and self._next - self._ep_start >= cap:
            raise ValueError(f"an episode longer than capacity_steps={cap} cannot be stored")
        # Evict whole episodes whose first slot is about to be overwritten.
        evicted = 0
        while self._starts and self._starts[0] <= self._next - cap:
            self._starts.pop(0)
            self._ends.pop(0)
            evicted += 1
        if evicted:
            self._reindex()
        s = self._next % cap
        self._obs[s] = o
        self._proprio[s] = p
        self._action[s] = a
        self._reward[s] = r
        self._cont[s] = cont
        self._next += 1
        if self.store is not None:
            for k, v in zip(
                (FEATURES_KEY, PROPRIO_KEY, keys.ACTION, REWARD_KEY, CONT_KEY),
                (o, p, a, np.array(r, np.float32), np.array(cont, np.float32)),
                strict=True,
            ):
                if k == FEATURES_KEY and self.pixels:
                    hwc = o.transpose(1, 2, 0)
                    if self.obs_shape[0] == 6:  # RGB + point map: two arrays, img stays RGB
                        self._pending.setdefault(keys.POINTMAP, []).append(np.array(hwc[..., 3:]))
                        hwc = hwc[..., :3]
                    k, v = keys.IMAGE, np.ascontiguousarray(hwc)
                if k == PROPRIO_KEY and not self.proprio_dim:
                    continue  # pixels only: no zero-width array in the store
                self._pending.setdefault(k, []).append(np.array(v))

    def start_episode(self, obs: np.ndarray, proprio: np.ndarray | None = None) -> None:
        """Begin an episode with its first observation (one frame). Drops an unfinished one."""
        o, p = self._check(obs, proprio)
        if self._ep_start is not None:
            self._next = self._ep_start  # abandon the unfinished episode's rows
        self._pending = {}
        self._ep_start = self._next
        self._write(o, p, np.zeros(self.action_dim, np.float32), 0.0, 1.0)

    def add(
        self,
        action: np.ndarray,
        reward: float,
        obs: np.ndarray,
        proprio: np.ndarray | None = None,
        *,
        terminated: bool = False,
    ) -> None:
        """Record one agent step: ``action`` taken, ``reward`` received, ``obs`` reached.

        Raises :class:`NonFiniteError` on a NaN/inf reward or observation; nothing is written,
        and the caller should end (or abandon) the episode.
        """
        if self._ep_start is None:
            raise RuntimeError("call start_episode() before add()")
        a = np.asarray(action, np.float32).reshape(-1)
        if a.shape != (self.action_dim,) or not np.isfinite(a).all():
            raise NonFiniteError(f"action must be {self.action_dim} finite numbers, got {action!r}")
        if not math.isfinite(float(reward)):
            raise NonFiniteError(f"reward is {reward!r}")
        o, p = self._check(obs, proprio)
        self._write(o, p, a, float(reward), 0.0 if terminated else 1.0)

    def set_episode_rewards(self, rewards: np.ndarray) -> None:
        """Replace the rewards of the episode in progress (one per ``add``), e.g. with a learned
        reward model's scores computed for the whole episode in one batch before committing."""
        if self._ep_start is None:
            raise RuntimeError("no episode in progress")
        r = np.asarray(rewards, np.float32).reshape(-1)
        n = self._next - self._ep_start - 1
        if r.shape != (n,):
            raise ValueError(f"need {n} rewards (one per step), got {r.shape}")
        if not np.isfinite(r).all():
            raise NonFiniteError("reward model returned NaN/inf")
        slots = np.arange(self._ep_start + 1, self._next) % self.cfg.capacity_steps
        self._reward[slots] = r
        if REWARD_KEY in self._pending:
            self._pending[REWARD_KEY][1:] = [np.array(x, np.float32) for x in r]

    def end_episode(
        self,
        success: bool = False,
        intervened: np.ndarray | None = None,
        note: str = "",
        called: np.ndarray | None = None,
        terminated: bool = False,
    ) -> None:
        """Commit the current episode: persist it (if a directory is set), then make it sampleable.

        ``intervened`` (one flag per step) marks actions an operator gave, ``called`` the steps
        the success call fired on; both are persisted with the episode, as is ``note`` (the
        store's episode notes, e.g. why it ended early). ``terminated``: the last step is
        terminal (the episode ended at a success that ends it), whatever ``add`` was told:
        nothing bootstraps past it. A one-step episode (no transition) is dropped.
        """
        if self._ep_start is None:
            raise RuntimeError("no episode in progress")
        start, end = self._ep_start, self._next
        self._ep_start = None
        if end - start < 2:
            self._next = start
            self._pending = {}
            return
        if terminated:
            self._cont[(end - 1) % self.cfg.capacity_steps] = 0.0
            if CONT_KEY in self._pending:
                self._pending[CONT_KEY][-1] = np.array(0.0, np.float32)
        if self.store is not None:
            data = {k: np.stack(v) for k, v in self._pending.items()}

            def by_row(per_step: np.ndarray | None) -> np.ndarray:
                """In memory, row t holds step t - 1's flag (the action into t, the call
                on arriving at t); row 0 False."""
                rows = np.zeros(end - start, bool)
                if per_step is not None and len(per_step):
                    rows[1 : 1 + len(per_step)] = np.asarray(per_step, bool)[: end - start - 1]
                return rows

            data[INTERVENED_KEY] = by_row(intervened)
            if not self.store.n_steps or CALLED_KEY in self.store.data_keys:
                data[CALLED_KEY] = by_row(called)
            if self._taken_rows:  # to the episode layout: row t, the action taken at t
                shift_rows(data, (keys.ACTION, INTERVENED_KEY), down=False)
            self.store.append_episode(data, task=self.task, success=success, kind="agent",
                                      notes=note)  # fmt: skip
        self._pending = {}
        self._starts.append(start)
        self._ends.append(end)
        self.n_episodes_total += 1
        self._reindex()

    def abandon_episode(self) -> None:
        """Drop the episode in progress (e.g. after a NaN); nothing of it is kept."""
        if self._ep_start is not None:
            self._next = self._ep_start
        self._ep_start = None
        self._pending = {}

    def _reindex(self) -> None:
        lengths = np.asarray(self._ends, np.int64) - np.asarray(self._starts, np.int64)
        self._cum = np.cumsum(lengths - 1)

    # ----------------------------------------------------------------- reading
    def room(self) -> int:
        """Slots left before a new step would evict the oldest episode."""
        first = self._starts[0] if self._starts else self._ep_start
        return self.cfg.capacity_steps - (0 if first is None else self._next - first)

    def __len__(self) -> int:
        """Transitions that can be sampled."""
        return int(self._cum[-1]) if self._cum.size else 0

    @property
    def n_episodes(self) -> int:
        return len(self._starts)

    def _stack(self, t: np.ndarray, start: np.ndarray, src: np.ndarray) -> np.ndarray:
        k = self.cfg.frame_stack
        idx = np.maximum(t[:, None] + np.arange(1 - k, 1), start[:, None]) % self.cfg.capacity_steps
        frames = src[idx]  # (B, k, *frame)
        return frames.reshape(len(t), k * self.obs_shape[0], *self.obs_shape[1:])

    def transitions(self, t: np.ndarray, episode: np.ndarray) -> Batch:
        """Batch for absolute step indices ``t`` of committed episodes ``episode`` (positions)."""
        cap, n, gamma = self.cfg.capacity_steps, self.cfg.nstep, self.cfg.discount
        start = np.asarray(self._starts, np.int64)[episode]
        last = np.asarray(self._ends, np.int64)[episode] - 1
        m = np.minimum(n, last - t)  # steps actually available (>= 1)
        reward = np.zeros(len(t), np.float32)
        discount = np.ones(len(t), np.float32)
        for j in range(n):
            valid = j < m
            idx = np.minimum(t + 1 + j, last) % cap
            reward += np.where(valid, discount * self._reward[idx], 0.0).astype(np.float32)
            discount *= np.where(valid, gamma * self._cont[idx], 1.0).astype(np.float32)
        nxt = t + m
        with_p = self.proprio_dim > 0
        return Batch(
            obs=self._stack(t, start, self._obs),
            action=self._action[(t + 1) % cap],
            reward=reward,
            discount=discount,
            next_obs=self._stack(nxt, start, self._obs),
            proprio=self._proprio[t % cap] if with_p else None,
            next_proprio=self._proprio[nxt % cap] if with_p else None,
        )

    def sample(self, batch_size: int) -> Batch:
        """Uniform over all committed transitions."""
        total = len(self)
        if total == 0:
            raise RuntimeError("replay has no finished episode to sample from")
        u = self._rng.integers(0, total, size=batch_size)
        ep = np.searchsorted(self._cum, u, side="right")
        before = np.concatenate([[0], self._cum])[ep]
        t = np.asarray(self._starts, np.int64)[ep] + (u - before)
        return self.transitions(t, ep)

    # ----------------------------------------------------------------- persistence
    def restore(self, with_calls: bool = False) -> int:
        """Reload the newest finished episodes from ``directory`` into an empty buffer.

        Returns the number of agent steps (transitions) restored. Episodes with operator steps
        (and, ``with_calls``, episodes the success call fired on: self-imitation) are also kept
        in :attr:`restored_steps`, so a resumed learner can put what joined its demonstration
        buffer back there.
        """
        if self.store is None:
            raise RuntimeError("restore() needs a replay directory")
        if self._next or self._starts:
            raise RuntimeError("restore() into a buffer that already holds data")
        ends = self.store.episode_ends
        lengths = np.diff(np.concatenate([[0], ends]))
        keep, used = [], 0
        for i in range(len(ends) - 1, -1, -1):
            if used + lengths[i] > self.cfg.capacity_steps:
                break
            keep.append(i)
            used += int(lengths[i])
        obs_key = keys.IMAGE if self.pixels else FEATURES_KEY
        fields = [obs_key, keys.ACTION, REWARD_KEY, CONT_KEY]
        if self.pixels and self.obs_shape[0] == 6:
            if len(ends) and keys.POINTMAP not in self.store.data_keys:
                raise ValueError(f"{self.store.path} holds no point maps ({keys.POINTMAP!r}): "
                                 "it was recorded without pointmap; resume it without, or "
                                 "start a new run folder")  # fmt: skip
            fields.append(keys.POINTMAP)
        if self.proprio_dim:
            fields.append(PROPRIO_KEY)
        no_proprio = np.zeros(0, np.float32)
        extra = [k for k in (INTERVENED_KEY, CALLED_KEY) if k in self.store.data_keys]
        store, self.store = self.store, None  # do not re-persist while loading
        try:
            for i in reversed(keep):
                ep = store.episode(i, fields + extra)
                if self._taken_rows:  # back to the in-memory layout: row t, the action into t
                    shift_rows(ep, (keys.ACTION, INTERVENED_KEY), down=True)
                obs = np.asarray(ep[obs_key])
                if keys.POINTMAP in fields:
                    obs = np.concatenate([obs, np.asarray(ep[keys.POINTMAP])], axis=-1)
                if self.pixels:
                    obs = obs.transpose(0, 3, 1, 2)
                n = len(obs) - 1
                flags, calls = np.zeros(n, bool), np.zeros(n, bool)
                if INTERVENED_KEY in ep:
                    flags = np.asarray(ep[INTERVENED_KEY][1:], bool)
                if with_calls and CALLED_KEY in ep:
                    calls = np.asarray(ep[CALLED_KEY][1:], bool)
                if flags.any() or calls.any():
                    self.restored_steps.append(RestoredSteps(
                        flags, calls, list(obs),
                        list(np.asarray(ep[PROPRIO_KEY])) if self.proprio_dim else None,
                        list(np.asarray(ep[keys.ACTION][1:], np.float32)),
                        np.asarray(ep[REWARD_KEY][1:], np.float32)))  # fmt: skip
                self._ep_start = self._next
                for t in range(len(obs)):
                    p = ep[PROPRIO_KEY][t] if self.proprio_dim else no_proprio
                    self._write(obs[t], p, ep[keys.ACTION][t],
                                float(ep[REWARD_KEY][t]), float(ep[CONT_KEY][t]))  # fmt: skip
                self._starts.append(self._ep_start)
                self._ends.append(self._next)
                self._ep_start = None
        finally:
            self.store = store
        self.n_episodes_total = len(ends)
        self._reindex()
        return len(self)
