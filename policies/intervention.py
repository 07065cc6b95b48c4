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

from collections.abc import Callable
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
