"""``v2r sim learn``: its config checks and the report a new user reads first."""

from __future__ import annotations

import pytest
from video2reward.sim.learn import LearnConfig, report


def test_report_puts_the_evaluation_first_then_training_and_the_paths() -> None:
    result = {
        "out": "/r",
        "train": {"episodes": 30, "success_rate": 0.5, "success_rate_last_10": 0.9},
        "eval": {"episodes": 10, "success_rate": 0.8},
        "curves": ["/r/learner/eval_curve.png", "/r/learner/train_curve.png"],
        "videos": ["/r/learner/eval_last_episode.mp4"],
    }
    lines = report(result).splitlines()
    assert lines[0].startswith("evaluation: the policy reached the target in 8/10 episodes")
    assert "50%" in lines[1] and "last 10: 90%" in lines[1]
    assert "/r/learner/train_curve.png" in lines[2] and "eval_last_episode.mp4" in lines[3]
    assert "/r/learner/eval_summary.json" in lines[4]


@pytest.mark.parametrize("bad", [{"task": "fly"}, {"reward": "magic"}, {"episodes": 0},
                                 {"pretrain_updates": -1}, {"eval_episodes": -1}])
def test_bad_settings_are_refused_with_their_name(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        LearnConfig(**bad)  # type: ignore[arg-type]
