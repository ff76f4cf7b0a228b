"""`vividhead inspect --what-if`: the funnel re-decided from stored metrics under other thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_inspect_fixture import Expected, synthetic_build  # noqa: F401

from vividhead.cli import main
from vividhead.inspection.reader import InspectError, resolve
from vividhead.inspection.whatif import parse_overrides, what_if


def run(out: Path, *assignments: str) -> dict:
    dataset = resolve([out])
    return what_if(dataset, parse_overrides(list(assignments), dataset))


def test_the_build_thresholds_reproduce_the_stored_funnel(synthetic_build: Expected) -> None:
    result = run(synthetic_build.root, "sync.min_confidence=3.0")
    assert result["before"] == result["after"] and not result["moves"] and result["disagreements"] == 0
    assert result["before"]["kept"]["clips"] == 3
    assert result["redecided_stages"] == ["segment", "visibility", "speech", "sync"]


def test_a_stricter_threshold_rejects_kept_clips(synthetic_build: Expected) -> None:
    result = run(synthetic_build.root, "sync.min_confidence=5")
    assert result["after"]["kept"]["clips"] == 2                       # the clip with LSE-C 4.0 goes
    assert result["after"]["stages"]["sync"]["clips"] == 2
    assert list(result["moves"]) == ["kept -> sync"]
    assert result["moves"]["kept -> sync"]["examples"] == [synthetic_build.kept_keys[1]]


def test_a_looser_threshold_keeps_a_clip_only_when_later_stages_scored_it(synthetic_build: Expected) -> None:
    loose_sync = run(synthetic_build.root, "sync.min_confidence=1", "sync.max_abs_offset=10")
    assert loose_sync["after"]["kept"]["clips"] == 4                   # sync is the last stage: decided
    assert loose_sync["after"]["kept"]["hours"] == pytest.approx((synthetic_build.kept_seconds + 1.2) / 3600)
    loose_speech = run(synthetic_build.root, "speech.min_speech_ratio=0.05")
    assert loose_speech["after"]["kept"]["clips"] == 3                 # sync never scored that clip
    assert loose_speech["needs_recompute"]["clips"] == 1
    offset_only = run(synthetic_build.root, "sync.min_confidence=1")   # |offset| 9 > 6 still rejects it
    assert offset_only["after"]["stages"]["sync"]["clips"] == 1
    off = run(synthetic_build.root, "sync.enabled=false")
    assert off["after"]["kept"]["clips"] == 4


@pytest.mark.parametrize(("assignment", "message"), [
    ("sync.min_confidance=2", "section 'sync' of the build config has no field 'min_confidance'"),
    ("synk.min_confidence=2", "the build config has no section 'synk'"),
    ("sync.min_confidence=high", "expected a number like the build's 3.0, got 'high'"),
    ("sync.min_confidence", "expected STAGE.PARAM=VALUE"),
    ("segment.max_seconds=60", "no stored metric decides this field"),
])
def test_bad_assignments_name_the_field(synthetic_build: Expected, assignment: str, message: str) -> None:
    with pytest.raises(InspectError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        run(synthetic_build.root, assignment)


def test_cli_what_if(synthetic_build: Expected, capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", str(synthetic_build.root), "--what-if", "sync.min_confidence=5"]) == 0
    out = capsys.readouterr().out
    assert "What-if: sync.min_confidence=5" in out and "rejected by sync" in out
    assert main(["inspect", str(synthetic_build.root), "--json", "--what-if", "speech.min_speech_ratio=0.9"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["what_if"]["after"]["kept"]["clips"] == 1               # speech ratios 0.9, 0.8, 0.6
    assert main(["inspect", "--what-if", "sync.min_confidence=5", str(synthetic_build.root)]) == 0  # path last
    assert "What-if: sync.min_confidence=5" in capsys.readouterr().out
    assert main(["inspect", str(synthetic_build.root), "--what-if", "sync.nope=1"]) == 2
    assert "has no field 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("fixture", ["demo_build", "media_build"])
def test_rules_reproduce_a_real_build_and_re_decide_it(request: pytest.FixtureRequest, fixture: str) -> None:
    """The RULES table agrees with the stages' own decisions: the build's thresholds change nothing."""
    from test_inspect_summary import real_build

    out = real_build(request, fixture)
    config = json.loads((out / "build.json").read_text())["config"]
    same = run(out, f"speech.min_speech_ratio={config['speech']['min_speech_ratio']}")
    assert same["before"] == same["after"] and same["disagreements"] == 0 and not same["moves"]
    strict = run(out, "speech.min_speech_ratio=1.0")            # no real clip is speech from edge to edge
    assert strict["after"]["kept"]["clips"] == 0
    assert strict["after"]["stages"]["speech"]["clips"] == same["before"]["stages"].get("speech", {"clips": 0})["clips"] \
        + same["before"]["kept"]["clips"]


def test_what_if_decides_with_the_stage_modules_own_function(synthetic_build: Expected,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Speech is re-decided by its stage table row's `decide` (speech.decide, the function its process()
    applies): swap it and the re-decision follows, fed the stage's unprefixed metrics and the old and the new config."""
    from dataclasses import replace

    from vividhead.pipelines import stages

    seen: list[dict] = []

    def reject_under_the_new_config(metrics, config):
        seen.append(dict(metrics))
        return ("no_speech", "test") if config.min_speech_ratio == 0.31 else None

    assert run(synthetic_build.root, "speech.min_speech_ratio=0.31")["moves"] == {}   # the real rule: no change
    monkeypatch.setattr(stages, "STAGES", tuple(replace(stage, decide=reject_under_the_new_config)
                                                if stage.name == "speech" else stage for stage in stages.STAGES))
    result = run(synthetic_build.root, "speech.min_speech_ratio=0.31")
    assert result["after"]["kept"]["clips"] == 0
    assert result["moves"]["kept -> speech"]["clips"] == 3 and result["moves"]["sync -> speech"]["clips"] == 1
    assert seen and all(set(row) == {"speech_ratio"} for row in seen)
    assert result["thresholds"]["speech.min_speech_ratio"]["metric"] == "speech.speech_ratio"
