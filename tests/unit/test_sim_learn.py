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


def test_a_point_map_run_gets_the_cpu_preset_with_its_changes_in_its_own_params_file(
    tmp_path,
) -> None:
    import yaml
    from video2reward.policies.ros.learner_node import PARAMS
    from video2reward.sim.learn import POINTMAP_PARAMS, pointmap_params

    got = yaml.safe_load(pointmap_params(tmp_path).read_text())["learner"]["ros__parameters"]
    import importlib.resources

    preset = yaml.safe_load((importlib.resources.files("video2reward.configs")
                             / "learner_cpu.yaml").read_text())["learner"]["ros__parameters"]
    assert got == {**preset, **POINTMAP_PARAMS}
    names = {p[0] if isinstance(p, tuple) else p.name for p in PARAMS}
    assert set(POINTMAP_PARAMS) <= names  # every key is a learner node parameter
