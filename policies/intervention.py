"""Human interventions during learning (HIL-SERL's idea), and a scripted stand-in for the twin.

    intervener = ScriptedIntervener(InterventionConfig(enabled=True), expert)
    intervener.reset()                         # at each episode start
    a = intervener.action(obs, progress)       # the operator's command, or None: the policy acts

On the robot the operator takes over with a teleop device; in the twin, :class:`ScriptedIntervener`
stands in for that operator: it watches the reward model's progress (what an operator sees as
"getting on with the task") and, when it has not risen by ``min_gain`` over ``stall_steps``
agent steps, lets the twin's scripted expert drive for ``takeover_steps`` steps, at most
``max_per_episode`` times an episode. Taken-over steps go through the same safety envelope as
the policy's (the env applies it), are recorded with the applied command and flagged, and are
added to the demonstration buffer, so the BC term and the critic learn from the correction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InterventionConfig:
    enabled: bool = False  # twin only: a scripted operator takes over when the policy stalls
    stall_steps: int = 6  # agent steps without min_gain of learned progress before taking over
    min_gain: float = 0.02  # progress rise that counts as getting on with the task
    takeover_steps: int = 8  # agent steps the operator drives before handing back
    max_per_episode: int = 2  # take-overs per episode at most

    def __post_init__(self) -> None:
        if self.stall_steps < 1 or self.takeover_steps < 1 or self.max_per_episode < 0:
            raise ValueError(
                "need stall_steps >= 1, takeover_steps >= 1 and max_per_episode >= 0, got "
                f"{self.stall_steps}, {self.takeover_steps}, {self.max_per_episode}"
            )
        if not np.isfinite(self.min_gain):
            raise ValueError(f"min_gain must be finite, got {self.min_gain}")


class ScriptedIntervener:
    """Takes over with ``expert`` (obs -> action; ``expert_reset`` re-plans from the current
    state) when the learned progress stalls. Counts its take-overs and steps."""

    def __init__(
        self,
        cfg: InterventionConfig,
        expert: Callable[[dict[str, np.ndarray]], np.ndarray],
        expert_reset: Callable[[], None] = lambda: None,
    ):
        self.cfg, self.expert, self.expert_reset = cfg, expert, expert_reset
        self.takeovers = 0  # over the whole run
        self.steps = 0
        self.reset()

    def reset(self) -> None:
        self._best = -np.inf  # best progress seen since the last take-over
        self._since_best = 0
        self._left = 0  # take-over steps left
        self._episode_takeovers = 0

    @property
    def episode_takeovers(self) -> int:
        """Take-overs in the episode so far."""
        return self._episode_takeovers

    def action(self, obs: dict[str, np.ndarray], progress: float) -> np.ndarray | None:
        """The operator's command for this step, or None when the policy keeps control."""
        if self._left == 0:
            if progress >= self._best + self.cfg.min_gain:
                self._best, self._since_best = progress, 0
            else:
                self._since_best += 1
            stalled = self._since_best >= self.cfg.stall_steps
            if not (stalled and self._episode_takeovers < self.cfg.max_per_episode):
                return None
            self._left = self.cfg.takeover_steps
            self._episode_takeovers += 1
            self.takeovers += 1
            self.expert_reset()
        self._left -= 1
        self.steps += 1
        if self._left == 0:  # hand back: the policy gets stall_steps to make progress
            self._best, self._since_best = progress, 0
        return np.asarray(self.expert(obs), np.float32)


class OperatorTakeover:
    """An operator's teleop stream on the learner's ``intervention`` topic (the teleop node
    with ``intervention:=true``: the same keyboard, SpaceMouse, gamepad or Twist inputs).

    ``feed`` takes each message: 4 numbers are the operator's command (they hold the dead-man
    and drive), an empty message hands control back to the policy. While the operator drives,
    :meth:`action` returns their latest command; silence for longer than ``timeout_s`` without
    a hand-back is a lost device (unplugged, its node dead): :attr:`lost` is set and stays set
    until :meth:`reset`, and the driver of the episode stops the arm and ends the episode.
    Commands with a component beyond ``limit`` or not finite are refused (an upstream bug, not
    a command to clip); others are clipped to [-1, 1]."""

    def __init__(self, timeout_s: float = 0.3, limit: float = 1.5):
        if not 0.0 < timeout_s < 60.0 or not limit >= 1.0:
            raise ValueError(f"need 0 < timeout_s < 60 and limit >= 1, got {timeout_s}, {limit}")
        self.timeout_s, self.limit = timeout_s, limit
        self.refused = 0  # messages refused over the whole run
        self.last_t = -np.inf  # host time of the last message (a hand-back too)
        self.takeovers = 0  # over the whole run
        self.steps = 0  # agent steps driven by the operator, over the whole run
        self.reset()

    def reset(self) -> None:
        """At an episode start: the policy drives; a lost device must be seen to come back
        (a fresh message) before it drives again."""
        self._cmd: np.ndarray | None = None
        self._t = 0.0
        self.lost = False
        self.episode_steps = 0
        self.episode_takeovers = 0
        self._driving_last_step = False

    def feed(self, values: Sequence[float], t: float) -> str | None:
        """One message at host time ``t`` (monotonic seconds); returns why it was refused."""
        v = np.asarray(values, np.float64).reshape(-1)
        self.last_t = max(self.last_t, t)
        if v.size == 0:
            self._cmd = None  # handed back
            return None
        if v.size != 4 or not np.isfinite(v).all() or np.abs(v).max() > self.limit:
            self.refused += 1
            return f"intervention command refused (need 4 finite values within +-{self.limit}): {v}"
        self._cmd, self._t = np.clip(v, -1.0, 1.0).astype(np.float32), t
        return None

    def action(self, t: float) -> np.ndarray | None:
        """The operator's command for the agent step at ``t``, or None: the policy acts."""
        if self._cmd is not None and t - self._t > self.timeout_s:
            self._cmd = None  # silence while driving, no hand-back: the device is gone
            self.lost = True
        if self.lost or self._cmd is None:
            self._driving_last_step = False
            return None
        if not self._driving_last_step:
            self.takeovers += 1
            self.episode_takeovers += 1
        self._driving_last_step = True
        self.steps += 1
        self.episode_steps += 1
        return self._cmd.copy()
