"""`inspect --what-if 'stage.param=value'`: re-decide the funnel from the stored raw metrics.

Thresholds live in the build config (a section per stage); build.json holds the resolved config.
The stage table (`pipelines/stages.py`) says which config field is a threshold on which metric, and
gives each stage's pure `decide(metrics, config)`, the function the build itself applies. A
threshold is re-decidable when its metric column is stored. Re-decision walks the stages in
pipeline order. A clip that a changed threshold now rejects moves to that stage. A clip whose
stored rejection the rules explain, and which now passes, was never scored by the later stages:
it is counted as "needs recompute", never guessed as kept.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ValidationError

from vividhead.inspection.reader import Dataset, InspectError, manifest_batches, manifest_schema
from vividhead.inspection.summary import declared_stages, stage_order
from vividhead.pipelines import stages as table
from vividhead.pipelines.config import BuildConfig
from vividhead.pipelines.stages import Stage


@dataclass(frozen=True)
class Rule:
    """A build-config threshold and the stored metric column its stage decides it on."""

    stage: str
    param: str
    metric: str
    threshold: float | bool
    measure: str = "value"          # "value", "abs" (offsets) or "one_minus" (face ratio -> missing ratio)
    enabled: bool = True            # False: the stage is switched off and lets every clip through

    @property
    def name(self) -> str:
        return f"{self.stage}.{self.param}"


def build_config(dataset: Dataset) -> dict[str, Any]:
    """The resolved build config from build.json, else the defaults of the build config."""
    for info in dataset.build_info():
        if isinstance(info.get("config"), dict):
            return info["config"]
    return BuildConfig().model_dump(mode="json")


def threshold_rules(config: dict[str, Any], columns: set[str]) -> list[Rule]:
    """Every threshold of the stage table whose metric column is stored, with the build's value."""
    rules = []
    for stage in table.STAGES:
        section = config.get(stage.name)
        if stage.decide is None or not isinstance(section, dict):
            continue
        for param, threshold in stage.thresholds.items():
            value, column = section.get(param), f"{stage.name}.{threshold.metric}"
            if column in columns and isinstance(value, (int, float)):      # a number, or a switch such as keep_unsure
                rules.append(Rule(stage.name, param, column, value if isinstance(value, bool) else float(value),
                                  threshold.measure, section.get("enabled", True) is not False))
    return rules


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_overrides(assignments: list[str], dataset: Dataset) -> dict[str, Any]:
    """Parse and validate `stage.param=value` against the build config; errors name the field."""
    if not dataset.has_manifest:
        raise InspectError("--what-if needs the manifest (rejected clips and their metrics); none was found")
    config = build_config(dataset)
    rules = threshold_rules(config, set(manifest_schema(dataset).names))
    decidable = {rule.name for rule in rules}
    stages = {rule.stage for rule in rules}
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        name, equals, text = assignment.partition("=")
        stage, dot, param = name.strip().partition(".")
        if not equals or not dot or not stage or not param:
            raise InspectError(f"--what-if {assignment!r}: expected STAGE.PARAM=VALUE, e.g. sync.min_confidence=2.5")
        section = config.get(stage)
        if not isinstance(section, dict):
            sections = ", ".join(sorted(key for key, value in config.items() if isinstance(value, dict)))
            raise InspectError(f"--what-if {name}: the build config has no section {stage!r} (sections: {sections})")
        if param not in section:
            raise InspectError(f"--what-if {name}: section {stage!r} of the build config has no field {param!r} "
                               f"(fields: {', '.join(sorted(section))})")
        value, current = _parse_value(text.strip()), section[param]
        if param == "enabled" and value is False and stage in stages:
            overrides[name.strip()] = False
            continue
        if param == "enabled":
            raise InspectError(f"--what-if {name}: only switching off a stage whose metrics are stored can be "
                               f"re-decided ({', '.join(f'{s}.enabled=false' for s in sorted(stages))})")
        if isinstance(current, bool) and not isinstance(value, bool):
            raise InspectError(f"--what-if {name}: expected true or false like the build's {current!r}, got {text!r}")
        if isinstance(current, (int, float)) and not isinstance(current, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InspectError(f"--what-if {name}: expected a number like the build's {current!r}, got {text!r}")
        if f"{stage}.{param}" not in decidable:
            raise InspectError(f"--what-if {name}: no stored metric decides this field, so the funnel can not "
                               f"be re-decided without re-running the build (re-decidable: "
                               f"{', '.join(sorted(decidable)) or 'none'})")
        overrides[f"{stage}.{param}"] = value
    _validate_with_schema(config, overrides)
    return overrides


def _changed(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of the build config with the overrides applied."""
    changed = json.loads(json.dumps(config))
    for name, value in overrides.items():
        stage, param = name.split(".", 1)
        changed[stage][param] = value
    return changed


def _validate_with_schema(config: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Let the build config's schema judge the new values (bounds such as 0 <= ratio <= 1), when it
    reads this build's config (an older build's config may not)."""
    try:
        BuildConfig.model_validate(config)
    except ValidationError:
        return
    try:
        BuildConfig.model_validate(_changed(config, overrides))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
        raise InspectError(f"--what-if: the build config rejects the new values: {problems}") from None


def _stage_config(stage: Stage, section: dict[str, Any]) -> BaseModel:
    """The stage's config from a build config section (fields it does not know are left out)."""
    known = {name: value for name, value in section.items() if name in stage.config.model_fields}
    try:
        return stage.config.model_validate(known)
    except ValidationError as error:
        problems = "; ".join(f"{stage.name}.{'.'.join(map(str, item['loc']))}: {item['msg']}"
                             for item in error.errors())
        raise InspectError(f"--what-if: the {stage.name} config rejects these values: {problems}") from None


def stage_decider(stage: Stage, config: dict[str, Any], overrides: dict[str, Any]):
    """Per batch, which rows the stage's own `decide` rejects under the old and the new config, and
    which rows it scored (any of its threshold metrics stored)."""
    old = _stage_config(stage, config[stage.name])
    new = _stage_config(stage, _changed(config, overrides)[stage.name])
    prefix = stage.name + "."
    metrics = [prefix + name for name in dict.fromkeys(t.metric for t in stage.thresholds.values())]

    def decide(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        present = [name for name in metrics if name in batch.schema.names]
        names = [name[len(prefix):] for name in present]
        # Per row the stage's metrics, None where missing (NaN too); only scored rows (any metric) are asked.
        columns = [[None if value != value else value for value in batch.column(name).to_pylist()] for name in present]
        rows = [dict(zip(names, values)) for values in zip(*columns)]
        scored = np.array([any(value is not None for value in row.values()) for row in rows], bool) \
            if rows else np.zeros(batch.num_rows, bool)
        asked = [row for row, hit in zip(rows, scored) if hit]

        def rejected(stage_config: Any) -> np.ndarray:
            out = np.zeros(batch.num_rows, bool)
            out[scored] = [stage.decide(row, stage_config) is not None for row in asked]
            return out

        before = rejected(old)
        return before, (before if new == old else rejected(new)), scored

    return decide


def _strings(batch: pa.RecordBatch, name: str) -> np.ndarray:
    column = batch.column(name)
    column = column if pa.types.is_string(column.type) else pc.cast(column, pa.string())
    return np.array(column.to_pylist(), dtype=object)


def what_if(dataset: Dataset, overrides: dict[str, Any]) -> dict[str, Any]:
    """Funnel now and under the overridden thresholds, streamed over the manifest."""
    config = build_config(dataset)
    columns = set(manifest_schema(dataset).names)
    rules = threshold_rules(config, columns)
    switched_off = {name.split(".", 1)[0] for name, value in overrides.items() if name.endswith(".enabled")}
    rule_stages = {rule.stage for rule in rules}
    deciders = {stage.name: stage_decider(stage, config, overrides)
                for stage in table.STAGES if stage.name in rule_stages}
    metrics = sorted({rule.metric for rule in rules})
    before: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    after: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    moves: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    examples: dict[str, list[str]] = defaultdict(list)
    disagreements = 0
    stages_seen: set[str] = set(rule_stages)
    declared = declared_stages(dataset.build_info())
    for batch in manifest_batches(dataset, ["key", "status", "reject_stage", "duration"] + metrics):
        status = _strings(batch, "status")
        stage = _strings(batch, "reject_stage")
        seconds = np.nan_to_num(pc.cast(batch.column("duration"), pa.float64()).to_numpy(zero_copy_only=False))
        keys = _strings(batch, "key")
        stages_seen.update(value for value in stage if value)
        order = stage_order(stages_seen, columns, declared)
        rank = {name: index for index, name in enumerate(order)}
        big = len(order) + 1
        original = np.array([big if value == "kept" or not where else rank.get(where, big)
                             for value, where in zip(status, stage)])
        outcome = np.where(status == "kept", "kept", np.where(stage == None, "(no stage)", stage)).astype(object)  # noqa: E711
        decided = {name: decide(batch) for name, decide in deciders.items()}
        done = np.zeros(batch.num_rows, bool)
        released = np.zeros(batch.num_rows, bool)     # passed their original rejecting stage under the what-if
        for name in order:
            here = rank[name]
            if name not in decided:
                # A stage without stored-metric rules: a released clip would only now meet it.
                unknown = released & ~done
                outcome[unknown] = "(needs recompute)"
                done |= unknown
                continue
            old_fail, new_fail, scored = decided[name]
            passed_before = (original > here) & ~done & ~released
            disagreements += int((passed_before & old_fail).sum())
            newly_rejected = passed_before & new_fail & ~old_fail
            # Released clips meet this stage for the first time: decide them if it scored them.
            later = released & ~done
            outcome[later & ~scored] = "(needs recompute)"
            rejected_later = later & scored & new_fail
            outcome[newly_rejected | rejected_later] = name
            done |= newly_rejected | (later & ~scored) | rejected_later
            explained = np.ones(batch.num_rows, bool) if name in switched_off else old_fail
            rejected_here = (original == here) & ~done & explained
            freed = rejected_here & ~new_fail
            outcome[freed] = "kept"
            released |= freed
            done |= rejected_here & new_fail
        for index in range(batch.num_rows):
            before_label = "kept" if status[index] == "kept" else (stage[index] or "(no stage)")
            for tally, label in ((before, before_label), (after, outcome[index])):
                tally[label][0] += 1
                tally[label][1] += seconds[index]
            if before_label != outcome[index]:
                move = f"{before_label} -> {outcome[index]}"
                moves[move][0] += 1
                moves[move][1] += seconds[index]
                if len(examples[move]) < 5:
                    examples[move].append(keys[index])
    order = stage_order(stages_seen, columns, declared)

    def funnel(tally: dict[str, list[float]]) -> dict[str, Any]:
        stages = {name: _tally(tally[name]) for name in order + ["(no stage)"] if name in tally}
        return {"kept": _tally(tally.get("kept", [0, 0.0])), "stages": stages}

    return {
        "overrides": overrides,
        "thresholds": {rule.name: {"metric": rule.metric, "build": rule.threshold,
                                   "what_if": overrides.get(rule.name, rule.threshold)} for rule in rules},
        "before": funnel(before),
        "after": funnel(after),
        "needs_recompute": _tally(after.get("(needs recompute)", [0, 0.0])),
        "moves": {move: {**_tally(tally), "examples": examples[move]} for move, tally in sorted(moves.items())},
        "disagreements": disagreements,
        "redecided_stages": [name for name in order if name in rule_stages],
    }


def _tally(pair: list[float]) -> dict[str, float]:
    return {"clips": int(pair[0]), "hours": float(pair[1]) / 3600.0}
