"""What SimFails v2 (`monitor.dataset design=families`) measures beyond the seed split's tables, on its test split of
held-out families (monitor/variations.py), for every method and semantic filter `monitor.evaluate` ran:

- **Failure AUROC per group and family of episodes:** every failure frame of the test split against the frames of
  one group (or family) of episodes that are not failure frames (benign changes of pace, a moving scene, the other
  held-out perturbations, nominal): does a benign variation score below real failures?
- **False alarms per group:** the share of *successful* episodes of the group in which the monitor ever says
  failure, with and without the overrun rule.
- **Episode TPR without the overrun rule** on the failed test episodes, beside the false-alarm rate on the
  successful episodes of every benign family (nominal included).
- **Detection lead time** of each failed episode of a held-out failure event (grasp lost, pushed away, knocked off):
  frames from the first failure verdict to (a) the labelled failure onset (the event's first visible frame) and
  (b) the step the simulator found the object lost (off the table; episodes that ran out of time have no such
  step and are left out of (b)); positive = the verdict came first, negative = it was late. Episodes never
  flagged are counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from monitor.metrics import auroc
from monitor.scoring import LABELS, monitor_failures
from monitor.variations import TRIGGERED_FAILURES, family_group

if TYPE_CHECKING:
    from monitor.evaluate import Evaluation

BENIGN_GROUPS = ("nominal", "benign: pace", "benign: moving scene", "other perturbation")
"""Groups whose successful episodes count as benign (false alarms)."""


@dataclass(frozen=True)
class Verdicts:
    """One (method, filter, overrun rule) monitor's failure verdicts on the test split, episode by episode."""

    method: str
    filter: str
    overrun: bool
    first: np.ndarray
    """(episodes,) first frame judged a failure, -1 = never."""


def episode_groups(evaluation: Evaluation) -> np.ndarray:
    return np.array([family_group(e["family"]) for e in evaluation.splits["test"].episodes])


def verdicts(evaluation: Evaluation) -> list[Verdicts]:
    """Every (method, filter, overrun) monitor's first failure verdict per test episode."""
    test = evaluation.splits["test"]
    out = []
    for result in evaluation.results:
        for overrun in (True, False):
            is_failure = monitor_failures(evaluation.scored[result.method, "test"], result.verdicts, overrun)
            first = np.full(len(test.episodes), -1)
            for e, (start, stop) in enumerate(zip(test.bounds[:-1], test.bounds[1:])):
                hits = np.flatnonzero(is_failure[start:stop])
                first[e] = hits[0] if len(hits) else -1
            out.append(Verdicts(result.method, result.name, overrun, first))
    return out


def group_auroc_rows(evaluation: Evaluation) -> list[list[str]]:
    """Per group and per family in it: failure frames of the whole test split against the non-failure frames of
    those episodes, each method."""
    test = evaluation.splits["test"]
    groups = episode_groups(evaluation)
    families = np.array([e["family"] for e in test.episodes])
    group_of_frame, family_of_frame = (np.repeat(a, np.diff(test.bounds)) for a in (groups, families))
    rows = []
    for group in sorted(set(groups)):
        members = sorted(set(families[groups == group]))
        for family in (["all"] if len(members) > 1 else []) + members:
            chosen_episodes = groups == group if family == "all" else families == family
            frames = group_of_frame == group if family == "all" else family_of_frame == family
            negatives = frames & ~test.failure
            chosen = negatives | test.failure
            row = [group, family, str(int(chosen_episodes.sum())), str(int(negatives.sum()))]
            for method in evaluation.methods:
                score = evaluation.scored[method, "test"].score
                row.append(_pct(auroc(score[chosen], test.failure[chosen])))
            rows.append(row)
    return rows


def false_alarm_rows(evaluation: Evaluation, measured: list[Verdicts]) -> tuple[list[list[str]], list[str]]:
    """Per monitor: the share of successful episodes with a failure verdict per benign group, over all benign
    groups, and the share of failed episodes flagged (episode TPR); and the groups present."""
    test = evaluation.splits["test"]
    groups = episode_groups(evaluation)
    success = np.array([e["outcome"] == "success" for e in test.episodes])
    present = [g for g in BENIGN_GROUPS if (success & (groups == g)).any()]
    rows = []
    for v in measured:
        flagged = v.first >= 0
        cells = [f"{_share(flagged[success & (groups == g)])}" for g in present]
        benign = success & np.isin(groups, BENIGN_GROUPS)
        cells += [_share(flagged[benign]), _share(flagged[~success])]
        rows.append([LABELS[v.method], v.filter, "on" if v.overrun else "off", *cells])
    return rows, present


def lead_times(evaluation: Evaluation, v: Verdicts) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Per held-out failure family: the lead to the labelled onset of each failed and flagged episode, the lead to
    the object's loss of those where the simulator saw one, and how many failed episodes were never flagged."""
    test = evaluation.splits["test"]
    out: dict[str, tuple[list, list, list]] = {}
    for e, item in enumerate(test.episodes):
        if item["family"] not in TRIGGERED_FAILURES or item["outcome"] == "success":
            continue
        onset, lost, missed = out.setdefault(item["family"], ([], [], []))
        if v.first[e] < 0:
            missed.append(e)
            continue
        onset.append(int(item["failure_onset"]) - int(v.first[e]))
        if int(item["failure_step"]) >= 0:
            lost.append(int(item["failure_step"]) - int(v.first[e]))
    return {family: (np.array(a), np.array(b), len(m)) for family, (a, b, m) in out.items()}


def lead_rows(evaluation: Evaluation, measured: list[Verdicts]) -> list[list[str]]:
    rows = []
    for v in measured:
        for family, (onset, lost, missed) in sorted(lead_times(evaluation, v).items()):
            rows.append(
                [
                    LABELS[v.method],
                    v.filter,
                    "on" if v.overrun else "off",
                    family,
                    f"{len(onset)}/{len(onset) + missed}",
                    _median(onset),
                    str(len(lost)),
                    _median(lost),
                ]
            )
    return rows


def target_rows(evaluation: Evaluation, measured: list[Verdicts]) -> list[list[str]]:
    """The issue's four targets for SimFails v2, measured on the held-out test split."""
    rows = []
    groups = episode_groups(evaluation)
    test = evaluation.splits["test"]
    if "fidel" in evaluation.methods and len(evaluation.methods) > 1:
        frame_groups = np.repeat(groups, np.diff(test.bounds))
        subset = np.isin(frame_groups, ("benign: pace", "benign: moving scene"))
        chosen = (subset & ~test.failure) | test.failure
        scores = {m: evaluation.scored[m, "test"].score[chosen] for m in evaluation.methods}
        areas = {m: auroc(s, test.failure[chosen]) for m, s in scores.items()}
        best = max((m for m in evaluation.methods if m != "fidel"), key=lambda m: np.nan_to_num(areas[m], nan=-1))
        margin = 100 * (areas["fidel"] - areas[best])
        rows.append(
            [
                f"failure AUROC, pace + moving-scene frames against failures: FIDeL − best baseline ({LABELS[best]})",
                f"{margin:+.1f} points",
                "≥ +3",
                _verdict(margin >= 3),
            ]
        )
    success = np.array([e["outcome"] == "success" for e in test.episodes])
    pace = success & (groups == "benign: pace")
    benign = success & np.isin(groups, BENIGN_GROUPS)
    alpha = evaluation.config.alpha
    objects_lost = sum(
        e["family"] in TRIGGERED_FAILURES and e["outcome"] != "success" and int(e["failure_step"]) >= 0
        for e in test.episodes
    )
    for v in measured:
        if v.filter not in ("none", "trained"):
            continue
        flagged = v.first >= 0
        name = f"{LABELS[v.method]} + {v.filter} filter"
        if not v.overrun:
            tpr, fpr = flagged[~success].mean(), flagged[benign].mean()
            rows.append(
                [
                    f"{name}: episode TPR without overrun at benign episode FPR",
                    f"{100 * tpr:.0f}% at {100 * fpr:.0f}%",
                    "≥ 80% at ≤ 10%",
                    _verdict(tpr >= 0.8 and fpr <= 0.1),
                ]
            )
        else:
            rate = flagged[pace].mean() if pace.any() else float("nan")
            rows.append(
                [
                    f"{name}: false alarms on slower/faster/paused successes (overrun on)",
                    _share(flagged[pace]),
                    f"≤ {100 * (alpha + 0.05):.0f}%",
                    _verdict(rate <= alpha + 0.05),
                ]
            )
            leads = lead_times(evaluation, v)
            lost = np.concatenate([b for _, b, _ in leads.values()]) if leads else np.array([])
            missed = sum(m for _, _, m in leads.values())
            median = float(np.median(lost)) if len(lost) else float("nan")
            quantity = f"{name}: median lead before the simulator finds the object lost, held-out failure events"
            if not objects_lost:
                rows.append([quantity, "no failed episode lost the object", "≥ 5 frames", "not measurable"])
                continue
            rows.append(
                [
                    f"{quantity} ({len(lost)} of {objects_lost} detected; {missed} failed episodes never flagged)",
                    _median(lost),
                    "≥ 5 frames",
                    _verdict(median >= 5),
                ]
            )
    return rows


def _pct(value: float) -> str:
    return "–" if np.isnan(value) else f"{100 * value:.1f}"


def _share(flags: np.ndarray) -> str:
    return "–" if not len(flags) else f"{100 * flags.mean():.0f}% ({int(flags.sum())}/{len(flags)})"


def _median(values: np.ndarray) -> str:
    return "–" if not len(values) else f"{np.median(values):+.0f}"


def _verdict(met: bool) -> str:
    return "met" if met else "missed"
