"""Runs of one configuration across seeds: groups, mean ± std rows and paired differences.

Two trained runs belong to one group when their train.json inputs are equal once the seed is
removed (same prepared data and text cache hashes, same resolved config). The zero-shot baseline
is a group of its own. :func:`compute_group_rows` summarises each group's headline figures over
its seeds; :func:`compute_paired_rows` pairs every group with a reference group seed by seed and
gives the mean difference with its 95% Student-t interval (:mod:`sage_cli.stats`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

from sage_cli import artifacts, stats
from sage_cli.errors import SageError

logger = logging.getLogger(__name__)

FIGURES = ("top1", "top5", "many", "medium", "few", "mean_class_accuracy", "worst_class_accuracy",
           "hmean_class_accuracy", "gmean_class_accuracy", "macro_f1", "ece")


def compute_configuration_key(source_config: dict[str, Any], kind: str, tau: float | None = None) -> str:
    """What a run's group is decided by: its train.json inputs without the seed (zero-shot: its
    identity), and the post-hoc ``tau`` it is re-scored with, if any."""
    suffix = "" if tau is None else f":tau={tau!r}"
    if kind != "run":
        return f"{kind}:{artifacts.sha256_json(source_config)}{suffix}"
    inputs = copy.deepcopy(artifacts.strip_locations(source_config.get("inputs") or {}))  # content, not places
    inputs.get("config", {}).get("run", {}).pop("seed", None)
    return "run:" + artifacts.sha256_json(inputs) + suffix


def run_seed(source_config: dict[str, Any]) -> int | None:
    """The seed a run was trained with (None for the zero-shot baseline)."""
    seed = (source_config.get("config") or {}).get("run", {}).get("seed")
    return None if seed is None else int(seed)


def assign_groups(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group the report's run entries (in order of first appearance); sets each entry's ``group``.

    A group is named by the run directory name its members share (``s0/sage``, ``s1/sage`` ->
    ``sage``), else by its first member's name; a clash with another group's name gets ``-2``, ``-3``.
    """
    keyed: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        keyed.setdefault(entry["configuration"], []).append(entry)
    groups, taken = [], set()
    for members in keyed.values():
        basenames = {_short_name(m) for m in members}
        name = basenames.pop() if len(basenames) == 1 else members[0]["name"]
        base, i = name, 1
        while name in taken:
            i += 1
            name = f"{base}-{i}"
        taken.add(name)
        for m in members:
            m["group"] = name
        seeds = [m["seed"] for m in members]
        if len({s for s in seeds if s is not None}) < len([s for s in seeds if s is not None]):
            logger.warning("group %s holds two runs of the same seed (%s); their figures are averaged per seed",
                           name, ", ".join(m["name"] for m in members))
        groups.append({"name": name, "method": members[0]["method"], "runs": [m["name"] for m in members],
                       "seeds": seeds})
    return groups


def _short_name(entry: dict[str, Any]) -> str:
    """A run's directory name (with its post-hoc tau); the zero-shot row's own name."""
    if entry["kind"] != "run":
        return entry["name"]
    tau = entry.get("posthoc_tau")
    return PurePath(entry["location"]).name + ("" if tau is None else f" τ={tau:g}")


def _figure_by_seed(members: Sequence[dict[str, Any]], key: str) -> dict[Any, float]:
    """One value per seed (the mean where a seed repeats); runs without the figure are left out."""
    values: dict[Any, list[float]] = {}
    for m in members:
        value = m["metrics"].get(key)
        if value is not None:
            values.setdefault(m["seed"], []).append(float(value))
    return {seed: stats.compute_mean(v) for seed, v in values.items()}


def compute_group_rows(groups: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group: n and, per headline figure, mean, sample std and 95% interval over its runs."""
    by_name = {r["name"]: r for r in runs}
    rows = []
    for group in groups:
        members = [by_name[n] for n in group["runs"]]
        figures = {}
        for key in FIGURES:
            values = [float(m["metrics"][key]) for m in members if m["metrics"].get(key) is not None]
            figures[key] = stats.summarise(values).to_dict() if values else None
        rows.append({**group, "n": len(members), "metrics": figures})
    return rows


def find_reference(groups: Sequence[dict[str, Any]], reference: str) -> dict[str, Any]:
    """The group named ``reference``, or the group of the run named ``reference``."""
    for group in groups:
        if group["name"] == reference:
            return group
    for group in groups:
        if reference in group["runs"]:
            return group
    names = ", ".join(g["name"] for g in groups)
    raise SageError(f"--reference {reference}: no run group or run of that name; the groups are: {names}")


def compute_paired_rows(
    groups: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]], reference: str
) -> list[dict[str, Any]]:
    """Each other group minus the reference, paired by seed, per headline figure.

    A reference without seeds (the zero-shot baseline: one deterministic row) is subtracted from
    every seed. Seeds that only one side has are left out and listed.
    """
    by_name = {r["name"]: r for r in runs}
    ref = find_reference(groups, reference)
    ref_members = [by_name[n] for n in ref["runs"]]
    rows = []
    for group in groups:
        if group["name"] == ref["name"]:
            continue
        members = [by_name[n] for n in group["runs"]]
        figures, seeds = {}, None
        for key in FIGURES:
            ours, theirs = _figure_by_seed(members, key), _figure_by_seed(ref_members, key)
            if set(theirs) == {None}:  # a seedless reference: the same value against every seed
                theirs = dict.fromkeys(ours, theirs[None])
            elif set(ours) == {None}:
                ours = dict.fromkeys(theirs, ours[None])
            differences = stats.compute_paired_differences(ours, theirs)
            figures[key] = stats.summarise(differences.values()).to_dict() if differences else None
            if key == "top1":
                seeds = list(differences)
        unpaired = sorted({m["seed"] for m in members if m["seed"] is not None} - set(seeds or []))
        rows.append({"group": group["name"], "reference": ref["name"], "seeds": seeds or [], "n": len(seeds or []),
                     "unpaired_seeds": unpaired, "metrics": figures})
    return rows
