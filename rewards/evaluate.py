"""How good is a learned reward before any robot time is spent: metrics and plots.

    v2r reward eval ckpt=runs/vip data=heldout.zarr [cf_data=other_task.zarr] [out=runs/vip/eval]
    metrics = evaluate(model, load_episodes("heldout.zarr", 84), out_dir="eval/")

Metrics (``metrics.json``) and plots (``curves.png``):
- ``spearman``: value-order correlation, the Spearman correlation between predicted progress
  and time on each held-out successful expert episode, averaged (also min). Goal-conditioned
  models get the episode's own goal frame (below; ``spearman_no_goal`` uses none). When the
  data labels success per step, only frames up to the first successful one count: after it
  the true progress is constant, so time order is noise.
- ``auroc``: how well the episode score (mean progress over the last 10% of frames) separates
  successful from failed episodes; 1.0 = every success scores above every failure. A
  goal-conditioned model needs a goal image of the same scene, as a user would give it: when
  the data pairs episodes of one scene (same ``notes``, e.g. the twin's ``seed=N``), the
  successful episode's goal frame is the goal for every episode of that scene; episodes
  without a successful partner get the model's default goal. ``auroc_no_goal`` always uses
  the default goal (for Rank2Reward without a goal the two are the same). A goal-conditioned
  model's default goal is the training demos' goal set (a frame's distance to the nearest of
  their goals, ``rewards/base.py``), so the ``*_no_goal`` pair says how it does with no goal
  image at all: what a lab gets from its demos alone.
- ``spearman_one_goal``, ``auroc_one_goal`` (goal-conditioned models): the same two, every
  episode scored against one goal image taken in another episode of the task (the first
  held-out expert's goal frame; its own scene gets the second's): what a lab has, a goal
  photographed once while every episode's scene differs a little.
- ``counterfactual``: goal-conditioned models score the held-out expert episodes again with a
  goal from another task (``cf_data``'s goal frames; without it, each episode's own first
  frame). A sound reward then stops leading along the demo. ``rise`` and ``rise_true_goal``
  are the mean progress gained from the first frame to the first successful one; ``climb``
  and ``climb_true_goal`` the same from a straight-line fit over those frames, counted per
  episode only where it climbs (so a falling episode cannot offset a rising one, and a dip
  at the last frame does not hide a climb). The check passes when the final progress is lower
  than with the true goal and the curve is either not monotonic (mean Spearman <= 0.5) or
  flat (``climb`` at most a tenth of ``climb_true_goal``); ``passed_by`` says which.
  Spearman alone ranks a flat curve with a small drift as monotonic: HOLD-R on twin reach,
  scored with a push goal, sits at -2.2 and rises 0.04 against 1.03 with the true goal
  (Spearman 0.94), i.e. its progress climbs 4% as much. ``goal_check_refused`` is the
  fraction of those goals the goal check refuses (``RewardModel.goal_check``: a goal image
  farther from every demo goal than twice the demo goals' own spread, which the reward node
  and the learner refuse); when it refuses all of them the check passes by ``goal_check``,
  the scores above still saying what the reward would do if forced. ``one_goal_check_ratio``
  is the larger check ratio of the two one-goal photos (this task's, so under 2).

An episode's goal frame is the scene at the moment the task is done: its first successful
frame when the data labels success per step, else its last frame. That is the goal image a
user photographs and what ``XArm5Env.goal_image()`` renders for RL. The last frame can be
something else: the twin's push expert lifts the tool 6 cm once the block is on the disc and
the episode runs on ~90 steps, so its last frame shows the arm raised, which no training goal
(demos cut just after success) looks like, and which in scenes where the arm starts near the
disc looks like the start. Scored against the last frame, held-out push Spearman was 0.77 (VIP,
UVD) and 0.75 (HOLD-R); against the success frame, same settings, 0.97, 0.97 and 0.985.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr
from video2reward.rewards.base import RewardModel
from video2reward.rewards.data import VideoDataset

CF_MAX_SPEARMAN = 0.5  # counterfactual-goal check: mean Spearman must fall to this or below,
CF_MAX_CLIMB_FRACTION = 0.1  # or the progress climb to this fraction of the true goal's
BAR = 0.9  # the quality bar on Spearman and AUROC the verdict line applies


def auroc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U), ties counted as one half."""
    pos, neg = np.asarray(scores_pos, float), np.asarray(scores_neg, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def time_spearman(progress: np.ndarray) -> float:
    if len(progress) < 3 or np.ptp(progress) == 0:
        return 0.0
    return float(spearmanr(progress, np.arange(len(progress))).statistic)


def climb(progress: np.ndarray) -> float:
    """How much progress climbs over a curve: a least-squares line's rise from the first to the
    last frame, 0 when it falls."""
    if len(progress) < 2:
        return 0.0
    slope = np.polyfit(np.arange(len(progress)), np.asarray(progress, float), 1)[0]
    return float(max(0.0, slope * (len(progress) - 1)))


def final_score(progress: np.ndarray) -> float:
    k = max(3, int(np.ceil(0.1 * len(progress))))
    return float(np.mean(progress[-k:]))


def evaluate(
    model: RewardModel, data: VideoDataset, cf_data: VideoDataset | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    experts = [i for i, info in enumerate(data.infos) if info.success and info.kind == "expert"]
    succ = [i for i, info in enumerate(data.infos) if info.success]
    fail = [i for i, info in enumerate(data.infos) if not info.success]
    curves: dict[str, list[dict[str, np.ndarray]]] = {"expert": [], "failed": [], "cf": []}

    rho, rho_nog, final_true, rise_true, climb_true = [], [], [], [], []
    for i in experts:
        frames = data.episode(i)
        n = _task_frames(data, i)
        goal = frames[n - 1] if model.uses_goal else None
        out = model.score(frames, goal)
        rho.append(time_spearman(out.progress[:n]))
        final_true.append(final_score(out.progress))
        rise_true.append(float(out.progress[n - 1] - out.progress[0]))
        climb_true.append(climb(out.progress[:n]))
        nog = model.score(frames) if model.uses_goal else out
        rho_nog.append(time_spearman(nog.progress[:n]))
        curves["expert"].append({"progress": out.progress, "reward": out.reward})

    scene_goal = {info.notes: goal_frame(data, i) for i, info in enumerate(data.infos)
                  if info.success and info.notes}
    ep_scores: dict[bool, list[float]] = {True: [], False: []}
    ep_scores_nog: dict[bool, list[float]] = {True: [], False: []}
    paired = 0
    for i in succ + fail:
        frames, info = data.episode(i), data.infos[i]
        goal = scene_goal.get(info.notes) if model.uses_goal and info.notes else None
        paired += goal is not None
        out = model.score(frames, goal)
        ep_scores[info.success].append(final_score(out.progress))
        nog = model.score(frames) if goal is not None else out
        ep_scores_nog[info.success].append(final_score(nog.progress))
        if not info.success:
            curves["failed"].append({"progress": out.progress, "reward": out.reward})

    metrics: dict[str, Any] = {
        "method": model.method,
        "episodes": {"expert": len(experts), "success": len(succ), "failed": len(fail)},
        "spearman": float(np.mean(rho)) if rho else float("nan"),
        "spearman_min": float(np.min(rho)) if rho else float("nan"),
        "spearman_no_goal": float(np.mean(rho_nog)) if rho_nog else float("nan"),
        "auroc": auroc(np.array(ep_scores[True]), np.array(ep_scores[False])),
        "auroc_no_goal": auroc(np.array(ep_scores_nog[True]), np.array(ep_scores_nog[False])),
        "auroc_goal_source": (f"same-scene success ({paired} episodes), else default"
                              if paired else "default goal"),
        "final_progress_success": float(np.mean(ep_scores[True])) if succ else float("nan"),
        "final_progress_failed": float(np.mean(ep_scores[False])) if fail else float("nan"),
    }

    if model.uses_goal and len(experts) >= 2:
        # What a lab has: one goal image, photographed once in another episode of the task.
        # Every episode is scored against the first held-out expert's goal frame, except the
        # episodes of that scene, which get the goal frame of the first expert of another.
        scene0 = data.infos[experts[0]].notes
        other = [i for i in experts[1:] if not scene0 or data.infos[i].notes != scene0]
        photos = [experts[0], (other or experts[1:])[0]]

        def lab_goal(i: int) -> np.ndarray:
            same = i == photos[0] or (bool(scene0) and data.infos[i].notes == scene0)
            return goal_frame(data, photos[1] if same else photos[0])

        progress = {i: model.score(data.episode(i), lab_goal(i)).progress
                    for i in succ + fail}  # the experts are among the successes
        rho_one = [time_spearman(progress[i][:_task_frames(data, i)]) for i in experts]
        one: dict[bool, list[float]] = {True: [], False: []}
        for i in succ + fail:
            one[data.infos[i].success].append(final_score(progress[i]))
        metrics["spearman_one_goal"] = float(np.mean(rho_one))
        metrics["auroc_one_goal"] = auroc(np.array(one[True]), np.array(one[False]))
        checks = [model.goal_check(goal_frame(data, i)) for i in photos]
        if all(c is not None for c in checks):  # the photos are this task's: none refused
            metrics["one_goal_check_ratio"] = max(c.ratio for c in checks if c is not None)

    if model.uses_goal and experts:
        rho_cf, final_cf, rise_cf, climb_cf, refused = [], [], [], [], []
        for n, i in enumerate(experts):
            frames = data.episode(i)
            if cf_data is not None:
                cf = goal_frame(cf_data, n % len(cf_data))
                cf = cf if cf.shape == frames.shape[1:] else _resize(cf, frames.shape[1:3])
            else:
                cf = frames[0]
            check = model.goal_check(cf)
            if check is not None:
                refused.append(not check.ok)
            out = model.score(frames, cf)
            k = _task_frames(data, i)
            rho_cf.append(time_spearman(out.progress[:k]))
            final_cf.append(final_score(out.progress))
            rise_cf.append(float(out.progress[k - 1] - out.progress[0]))
            climb_cf.append(climb(out.progress[:k]))
            curves["cf"].append({"progress": out.progress, "reward": out.reward})
        figures = {
            "spearman": float(np.mean(rho_cf)),
            "final_progress": float(np.mean(final_cf)),
            "final_progress_true_goal": float(np.mean(final_true)),
            "rise": float(np.mean(rise_cf)),
            "rise_true_goal": float(np.mean(rise_true)),
            "climb": float(np.mean(climb_cf)),
            "climb_true_goal": float(np.mean(climb_true)),
        }
        by = counterfactual_verdict(figures)
        # Scored anyway; the reward node and the learner refuse such a goal image.
        all_refused = bool(refused) and all(refused)
        by = by or ("goal_check" if all_refused else None)
        metrics["counterfactual"] = {
            "goal_source": "other_task" if cf_data is not None else "own_first_frame",
            **figures, "goal_check_refused": float(np.mean(refused)) if refused else None,
            "passed": by is not None, "passed_by": by,
        }

    metrics["verdict"] = verdict(metrics, model.uses_goal)
    metrics = _finite_or_none(metrics)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_curves(curves, metrics, out / "curves.png")
    return metrics


def verdict(m: dict[str, Any], uses_goal: bool, bar: float = BAR) -> str:
    """One line a lab can act on before robot time: whether the reward rises in order along
    held-out demonstrations, separates successes from failures and ignores a wrong goal, and
    what to do about the first thing that fails (``bar``: 0.9, the project's quality bar)."""
    def ok(x: Any) -> bool:
        return x is not None and np.isfinite(x) and x >= bar

    parts, fixes = [], []
    rho = m.get("spearman")
    if ok(rho):
        parts.append(f"rises in order along held-out demos (Spearman {rho:.2f})")
    else:
        parts.append(f"does NOT rise in order along held-out demos (Spearman {_fmt(rho)})")
        fixes.append("more demos or training steps, or another method")
    au, n_fail = m.get("auroc"), m.get("episodes", {}).get("failed", 0)
    if not n_fail:
        parts.append("separation from failures untested (no failed episodes in the data)")
        fixes.append("record a few failed attempts to check it")
    elif ok(au):
        parts.append(f"separates successes from failures (AUROC {au:.2f})")
    else:
        parts.append(f"does NOT separate successes from failures (AUROC {_fmt(au)}): its "
                     "success call will misfire")
        fixes.append("add failed episodes to training or raise the success threshold")
    cf = m.get("counterfactual")
    if not uses_goal:
        parts.append("needs no goal image")
    elif cf is None:
        parts.append("wrong-goal check not run")
    elif cf.get("passed_by") == "goal_check":
        parts.append("refuses another task's goal image (it would follow it if forced: the "
                     "goal check stops it)")
    elif cf.get("passed"):
        parts.append("ignores a wrong goal")
    else:
        parts.append("FOLLOWS a wrong goal too (it reads the motion, not the goal)")
        fixes.append("check the goal image, or use a method that passed this check")
    one = (m.get("spearman_one_goal"), m.get("auroc_one_goal"))
    demo = (m.get("spearman_no_goal"), m.get("auroc_no_goal"))
    if uses_goal and one[0] is not None:
        holds_demo = ok(demo[0]) and (not n_fail or ok(demo[1]))
        if ok(one[0]) and (not n_fail or ok(one[1])):
            parts.append("holds with one goal photographed in another episode")
        elif holds_demo:
            parts.append(f"misses with one goal photographed in another episode (Spearman "
                         f"{_fmt(one[0])}, AUROC {_fmt(one[1])}) but holds with no goal image, "
                         f"against the demos' goals (Spearman {_fmt(demo[0])}, AUROC "
                         f"{_fmt(demo[1])}): give it no goal image")
        else:
            parts.append(f"needs each episode's own goal image (one goal from another "
                         f"episode: Spearman {_fmt(one[0])}, AUROC {_fmt(one[1])}; the demos' "
                         f"goals: {_fmt(demo[0])}, {_fmt(demo[1])})")
            fixes.append("photograph the goal in the scene of each run, or use a method "
                         "without a goal image")
    head = "ready for robot time" if not fixes else "NOT ready"
    tail = f"; fix: {fixes[0]}" if fixes else ""
    return f"{m.get('method', 'reward')}: {head}: {', '.join(parts)}{tail}"


def counterfactual_verdict(cf: dict[str, float]) -> str | None:
    """Why the scores pass the counterfactual check ("spearman" or "flat"), or None when they
    do not (:func:`evaluate` then passes it when the goal check refuses every wrong goal)."""
    if not cf["final_progress"] < cf["final_progress_true_goal"]:
        return None
    if cf["spearman"] <= CF_MAX_SPEARMAN:
        return "spearman"
    if (cf["climb_true_goal"] > 0
            and cf["climb"] <= CF_MAX_CLIMB_FRACTION * cf["climb_true_goal"]):
        return "flat"
    return None


def _task_frames(data: VideoDataset, i: int) -> int:
    """Frames up to and including the first successful one (all frames when unknown)."""
    first = data.infos[i].first_success
    return int(data.lengths[i]) if first < 2 else first + 1


def goal_frame(data: VideoDataset, i: int) -> np.ndarray:
    """Episode i's goal image: its first successful frame if labelled, else its last frame."""
    return data.episode(i)[_task_frames(data, i) - 1]


def _finite_or_none(x: Any) -> Any:
    """NaN (e.g. AUROC without failed episodes) -> None, so the JSON is standard."""
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def _resize(img: np.ndarray, hw: tuple[int, ...]) -> np.ndarray:
    import cv2

    return cv2.resize(img, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_AREA)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def plot_curves(curves: dict[str, list[dict[str, np.ndarray]]], metrics: dict[str, Any],
                path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"expert": ("tab:green", "expert (own goal)"), "failed": ("tab:red", "failed"),
              "cf": ("tab:purple", "expert, counterfactual goal")}
    for key, (color, label) in styles.items():
        for n, c in enumerate(curves[key]):
            x = np.linspace(0, 1, len(c["progress"]))
            lab = label if n == 0 else None
            axes[0].plot(x, c["progress"], color=color, alpha=0.5, lw=1, label=lab)
            axes[1].plot(x, np.cumsum(c["reward"]), color=color, alpha=0.5, lw=1, label=lab)
    axes[0].set_title(f"progress  (Spearman {_fmt(metrics['spearman'])}, "
                      f"AUROC {_fmt(metrics['auroc'])})")
    axes[1].set_title("cumulative reward")
    for ax in axes:
        ax.set_xlabel("normalised time")
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(metrics["method"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
