"""`inspect --what-if 'stage.param=value'`: re-decide the funnel from the stored raw metrics.

Thresholds live in the build config (sections named after stages); build.json holds the resolved
config. A threshold is re-decidable when a stored metric column decides it. The decisions are the
stages' own pure functions: `decide(metrics, config)` of pipelines/occlusion.py, speech.py and
sync.py (each with `THRESHOLD_METRICS`, the metric every threshold reads), and the build core's
`vividhead.pipelines.extract.decide_core(metrics, config)` for face, flow and visibility. Only the
segment length rule is restated here (`LOCAL_RULES`): the build core decides it in two ways that one
function cannot share unchanged - a clip by frame count (`n < round(min_seconds x fps)`, extract.py),
a whole source by probed seconds (`duration < min_seconds`, units.py) - while here it is the stored
`duration` column against `min_seconds`, vectorised like every other threshold.

Re-decision walks the stages in pipeline order. A clip that a changed threshold now rejects moves
to that stage. A clip whose stored rejection the rules explain, and which now passes, was never
scored by the later stages: it is counted as "needs recompute", never guessed as kept.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vividhead.inspection.reader import Dataset, InspectError, manifest_batches, manifest_schema
from vividhead.inspection.summary import declared_stages, stage_order

# (section, param) -> (the metric column that decides it, how the metric is measured).
# A `min_*` param rejects below the threshold, a `max_*` param above it. Segment length has no pure
# function in the build core, so its rule lives here. Face, flow and visibility are decided by
# `decide_core`; their entries name the metric each threshold reads and are the fallback when
# `decide_core` cannot read this build's config.
LOCAL_RULES: dict[tuple[str, str], tuple[str, str]] = {
    ("segment", "min_seconds"): ("duration", "value"),
    ("face", "max_upscale"): ("face.upscale", "value"),
    ("flow", "max_residual"): ("flow.max_residual", "value"),
    ("visibility", "max_missing_ratio"): ("visibility.face_ratio", "one_minus"),
    ("visibility", "max_second_face_ratio"): ("visibility.second_face_ratio", "value"),
}


@dataclass(frozen=True)
class StageDecision:
    """A filter stage's own decision: its config schema, threshold -> metric map and pure `decide`."""

    config_type: type
    threshold_metrics: Mapping[str, str]
    decide: Callable[[Mapping[str, Any], Any], tuple[str, str] | None]

    def config(self, stage: str, section: dict[str, Any]) -> Any:
        """The stage's config from a build config section (fields it does not know are left out)."""
        from pydantic import ValidationError

        known = {name: value for name, value in section.items() if name in self.config_type.model_fields}
        try:
            return self.config_type.model_validate(known)
        except ValidationError as error:
            problems = "; ".join(f"{stage}.{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
            raise InspectError(f"--what-if: the {stage} config rejects these values: {problems}") from None


def stage_decisions() -> dict[str, StageDecision]:
    """The filter stages (occlusion, speech, sync) whose decisions the stage modules export."""
    from vividhead.pipelines import occlusion, speech, sync
    from vividhead.pipelines.filter_config import OcclusionConfig, SpeechConfig, SyncConfig

    return {"occlusion": StageDecision(OcclusionConfig, occlusion.THRESHOLD_METRICS, occlusion.decide),
            "speech": StageDecision(SpeechConfig, speech.THRESHOLD_METRICS, speech.decide),
            "sync": StageDecision(SyncConfig, sync.THRESHOLD_METRICS, sync.decide)}


@dataclass(frozen=True)
class Rule:
    """Reject a clip at `stage` when its measured metric is below a `min` or above a `max` threshold.

    For the filter stages a Rule only names the threshold and its metric: their stage's `decide` decides.
    """

    stage: str
    param: str
    metric: str
    threshold: float
    measure: str = "value"          # "value", "abs" (offsets) or "one_minus" (face ratio -> missing ratio)
    enabled: bool = True            # False: the stage is switched off and lets every clip through

    @property
    def name(self) -> str:
        return f"{self.stage}.{self.param}"

    def fails(self, values: np.ndarray) -> np.ndarray:
        """True where a present value violates the threshold (NaN = not scored = no verdict)."""
        if not self.enabled:
            return np.zeros(values.shape, bool)
        measured = np.abs(values) if self.measure == "abs" else (1.0 - values if self.measure == "one_minus" else values)
        with np.errstate(invalid="ignore"):
            if "min_" in self.param:
                return measured < self.threshold
            return measured > self.threshold


def build_config(dataset: Dataset) -> dict[str, Any]:
    """The resolved build config from build.json, else the defaults of vividhead.config.BuildConfig."""
    for info in dataset.build_info():
        if isinstance(info.get("config"), dict):
            return info["config"]
    try:
        from vividhead.config import BuildConfig  # the build core's schema, when installed
    except ImportError as error:
        raise InspectError("--what-if needs the build config: no build.json with a 'config' section was "
                           "found and vividhead.config.BuildConfig is not available") from error
    return BuildConfig().model_dump(mode="json")


def _metric_for(stage: str, param: str, columns: set[str],
                decisions: dict[str, StageDecision]) -> tuple[str, str] | None:
    if stage in decisions:
        metric = decisions[stage].threshold_metrics.get(param)
        found, measure = (f"{stage}.{metric}" if metric else None), "value"
    else:
        found, measure = LOCAL_RULES.get((stage, param), (None, "value"))
    return (found, measure) if found in columns else None


def threshold_rules(config: dict[str, Any], columns: set[str]) -> list[Rule]:
    """Every numeric min_/max_ threshold of the config that a stored metric column decides."""
    decisions = stage_decisions()
    rules = []
    for stage, section in config.items():
        if not isinstance(section, dict):
            continue
        for param, value in section.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            found = _metric_for(stage, param, columns, decisions)
            if found is not None:
                rules.append(Rule(stage, param, found[0], float(value), found[1], section.get("enabled", True) is not False))
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
    """Let the build core's pydantic schema judge the new values (bounds such as 0 <= ratio <= 1),
    when it is installed and reads this build's config (an older build's config may not)."""
    try:
        from pydantic import ValidationError

        from vividhead.config import BuildConfig
    except ImportError:
        return
    try:
        BuildConfig.model_validate(config)
    except ValidationError:
        return
    try:
        BuildConfig.model_validate(_changed(config, overrides))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
        raise InspectError(f"--what-if: the build config rejects the new values: {problems}") from None


CORE_STAGES = ("face", "flow", "visibility")
CORE_METRICS = ("face.upscale", "flow.max_residual", "flow.max_residual_at", "visibility.face_ratio",
                "visibility.second_face_ratio")


def core_decider(config: dict[str, Any], overrides: dict[str, Any]):
    """The build core's own decision function for stages 5-7 with the old and the new config, or None
    when it is not installed or this build's config is not one it reads."""
    try:
        from pydantic import ValidationError

        from vividhead.config import BuildConfig
        from vividhead.pipelines.extract import decide_core
    except ImportError:
        return None
    try:
        old, new = BuildConfig.model_validate(config), BuildConfig.model_validate(_changed(config, overrides))
    except ValidationError:
        return None

    def decide(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the stage (or None) that rejects it under the old and the new config."""
        rows = batch.select([name for name in CORE_METRICS if name in batch.schema.names]).to_pylist()
        before = [(decide_core(row, old) or (None,))[0] for row in rows]
        after = [(decide_core(row, new) or (None,))[0] for row in rows]
        return np.array(before, dtype=object), np.array(after, dtype=object)

    return decide


def stage_decider(stage: str, decision: StageDecision, config: dict[str, Any], overrides: dict[str, Any]):
    """Per batch, which rows the filter stage's own `decide` rejects under the old and the new config,
    and which rows it scored (any of its threshold metrics stored)."""
    old = decision.config(stage, config[stage])
    new = decision.config(stage, _changed(config, overrides)[stage])
    prefix = stage + "."
    metrics = [prefix + name for name in dict.fromkeys(decision.threshold_metrics.values())]

    def decide(batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        present = [name for name in metrics if name in batch.schema.names]
        columns = [pc.cast(batch.column(name), pa.float64()).to_numpy(zero_copy_only=False) for name in present]
        scored = np.zeros(batch.num_rows, bool)
        for column in columns:
            scored |= np.isfinite(column)
        # Only scored rows are asked (a missing metric decides nothing), with None where a metric is missing.
        names = [name[len(prefix):] for name in present]
        values = zip(*(np.where(np.isfinite(column), column, None)[scored].tolist() for column in columns))
        rows = [dict(zip(names, row)) for row in values]

        def rejected(stage_config: Any) -> np.ndarray:
            out = np.zeros(batch.num_rows, bool)
            out[scored] = [decision.decide(row, stage_config) is not None for row in rows]
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
    old_rules = threshold_rules(config, columns)
    switched_off = {name.split(".", 1)[0] for name, value in overrides.items() if name.endswith(".enabled")}
    new_rules = [Rule(rule.stage, rule.param, rule.metric, float(overrides.get(rule.name, rule.threshold)),
                      rule.measure, rule.enabled and rule.stage not in switched_off) for rule in old_rules]
    rule_stages = {rule.stage for rule in old_rules}
    metrics = sorted({rule.metric for rule in old_rules})
    decide_core = core_decider(config, overrides)
    deciders = {stage: stage_decider(stage, decision, config, overrides)
                for stage, decision in stage_decisions().items() if stage in rule_stages}
    if decide_core is not None:
        rule_stages |= {stage for stage in CORE_STAGES
                        if any(name.startswith(stage + ".") and name in columns for name in CORE_METRICS)}
        metrics = sorted(set(metrics) | {name for name in CORE_METRICS if name in columns})
    before: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    after: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    moves: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    examples: dict[str, list[str]] = defaultdict(list)
    disagreements = 0
    stages_seen: set[str] = set(rule_stages)
    declared = declared_stages(dataset.build_info())
    fixed = ["key", "status", "reject_stage", "duration"]
    for batch in manifest_batches(dataset, fixed + metrics):
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
        values = {name: pc.cast(batch.column(name), pa.float64()).to_numpy(zero_copy_only=False) for name in metrics}
        outcome = np.where(status == "kept", "kept", np.where(stage == None, "(no stage)", stage)).astype(object)  # noqa: E711
        core_before, core_after = decide_core(batch) if decide_core is not None else (None, None)
        filtered = {stage: decide(batch) for stage, decide in deciders.items()}
        decided = np.zeros(batch.num_rows, bool)
        released = np.zeros(batch.num_rows, bool)     # passed their original rejecting stage under the what-if
        for name in order:
            here = rank[name]
            if name not in rule_stages:
                # A stage without stored-metric rules: a released clip would only now meet it.
                unknown = released & ~decided
                outcome[unknown] = "(needs recompute)"
                decided |= unknown
                continue
            old_fail = np.zeros(batch.num_rows, bool)
            new_fail = np.zeros(batch.num_rows, bool)
            scored = np.zeros(batch.num_rows, bool)
            if name in filtered:
                old_fail, new_fail, scored = filtered[name]
            elif core_before is not None and name in CORE_STAGES:
                old_fail, new_fail = core_before == name, core_after == name
                for metric in CORE_METRICS:
                    if metric.startswith(name + ".") and metric in values:
                        scored |= np.isfinite(values[metric])
            for old, new in zip(old_rules, new_rules):
                if old.stage == name and name not in filtered and (core_before is None or name not in CORE_STAGES):
                    column = values[old.metric]
                    scored |= np.isfinite(column)
                    old_fail |= old.fails(column)
                    new_fail |= new.fails(column)
            passed_before = (original > here) & ~decided & ~released
            disagreements += int((passed_before & old_fail).sum())
            newly_rejected = passed_before & new_fail & ~old_fail
            # Released clips meet this stage for the first time: decide them if it scored them.
            later = released & ~decided
            outcome[later & ~scored] = "(needs recompute)"
            rejected_later = later & scored & new_fail
            outcome[newly_rejected | rejected_later] = name
            decided |= newly_rejected | (later & ~scored) | rejected_later
            explained = np.ones(batch.num_rows, bool) if name in switched_off else old_fail
            rejected_here = (original == here) & ~decided & explained
            freed = rejected_here & ~new_fail
            outcome[freed] = "kept"
            released |= freed
            decided |= rejected_here & new_fail
        for index in range(batch.num_rows):
            before_label = "kept" if status[index] == "kept" else (stage[index] or "(no stage)")
            for table, label in ((before, before_label), (after, outcome[index])):
                table[label][0] += 1
                table[label][1] += seconds[index]
            if before_label != outcome[index]:
                move = f"{before_label} -> {outcome[index]}"
                moves[move][0] += 1
                moves[move][1] += seconds[index]
                if len(examples[move]) < 5:
                    examples[move].append(keys[index])
    order = stage_order(stages_seen, columns, declared)

    def funnel(table: dict[str, list[float]]) -> dict[str, Any]:
        stages = {name: _tally(table[name]) for name in order + ["(no stage)"] if name in table}
        return {"kept": _tally(table.get("kept", [0, 0.0])), "stages": stages}

    return {
        "overrides": overrides,
        "thresholds": {rule.name: {"metric": rule.metric, "build": rule.threshold,
                                   "what_if": overrides.get(rule.name, rule.threshold)} for rule in old_rules},
        "before": funnel(before),
        "after": funnel(after),
        "needs_recompute": _tally(after.get("(needs recompute)", [0, 0.0])),
        "moves": {move: {**_tally(tally), "examples": examples[move]} for move, tally in sorted(moves.items())},
        "disagreements": disagreements,
        "redecided_stages": [name for name in order if name in rule_stages],
    }


def _tally(pair: list[float]) -> dict[str, float]:
    return {"clips": int(pair[0]), "hours": float(pair[1]) / 3600.0}
