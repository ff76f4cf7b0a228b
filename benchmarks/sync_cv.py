"""Leave-one-speaker-out cross-validation of the weight-free lip-sync check (stage 10 without SyncNet).

    python benchmarks/sync_features.py          # once: face mesh + audio of every dev speaker -> /tmp/sync_feats
    python benchmarks/sync_cv.py [--cache /tmp/sync_feats]

Cases, from the cached features of every speaker DEV.md lists (benchmarks/sync_features.py):
- in sync: the speaker's own audio;
- shifted: the audio delayed or advanced by 200, 300, 500 and 1000 ms (as ffmpeg's adelay/atrim + apad do);
- dubbed: the face with each other speaker's voice, the voice taken from its start, a third and two thirds
  in; voice-over: each voice on the silent face (`lee`); each as long as the shorter of face and voice, as
  `curation_cases.dubbed` makes them.

Every tunable part of the check is a candidate (`candidates`). For the lips signal: the lip features
averaged in a view, its modulation band (or unfiltered), one view or the best of two (Sidak-corrected),
the lead window and the confidence statistic. For the canonical signal (the canonical correlation of
mouth-patch and mel-band principal components, `cca_curves_of`): the patches as they are or their
change per frame, 2, 4 or 8 mouth components, 1, 2 or 4 speech components, the band and the lead window.
Every case is measured with `lipsync`'s own functions on the case's own frames (a dubbed copy: the
shorter of face and voice), as stage 10 measures a clip. The levels follow from the training cases of
each candidate (`thresholds`): the verify level from the distribution of chance peaks (dubbed and
voice-over copies, wherever the peak falls), at the quantile that lets at most FALSE_VERIFY (1 in 5,000)
of them land verified in the lead window, and above every in-window peak of a training copy shifted by
300 ms or more; the reject level above every chance peak and every training in-sync peak beyond the
reject window. The candidate verifying the most training in-sync speakers wins (`select`).

Leave-one-speaker-out: for each speaker (both Obama clips are one speaker), the choice is made on the
cases that involve only the other speakers, and judged on the held-out speaker's in-sync clip, its
shifted copies, its face dubbed with every other voice and its voice laid over the silent face. The
cross-validated table counts those held-out verdicts; the in-sample tables judge the previous check and
the choice made on all the speakers (which must be `SyncConfig`'s default; the report says when it is
not) on the same data that chose them.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vividhead.models.face_mesh import CHIN, FOREHEAD, INNER_LIP_RING, mouth_darkness, polygon_area
from vividhead.pipelines import lipsync
from vividhead.pipelines.filter_config import SyncConfig

SAMPLES_PER_FRAME = 640
SEARCH = 30
SHIFTS_MS = (200, -200, 300, -300, 500, -500, 1000, -1000)
SAME_SPEAKER = {"ai-forever__ghost__obama_short": "obama", "tanshuai0219__EDTalk__uncrop_Obama": "obama"}
SILENT = "eknim__video-retalking__lee"
VOICE_PARTS = 3               # dubbed copies per (face, voice): the voice from 0, 1/3 and 2/3 of its length
MARGIN = 0.1                   # thresholds sit this far above the highest training value they must clear

@dataclass(frozen=True)
class Face:
    """One cached clip: its speaker group, lip features per frame and audio."""

    stem: str
    group: str
    speaker: bool
    lips: dict[str, np.ndarray]        # feature name -> per-frame signal (None-free; gaps filled)
    audio: np.ndarray                  # 16 kHz mono, trimmed or padded to the frames
    patches: np.ndarray                # [n, 16, 32] grey mouth patches (face_mesh.mouth_patch)
    valid: np.ndarray                  # [n] the mesh found a face


@dataclass(frozen=True)
class Case:
    kind: str                          # "in sync", "shift +200 ms", "dubbed", "voice-over"
    face: str                          # stem of the face
    voice: str                         # stem of the voice
    groups: frozenset[str]             # speaker groups the case involves (left out of training when held out)
    judged: str                        # the speaker group whose fold judges it (the face's; the voice's for voice-overs)


# ------------------------------------------------------------------------------------------ features
def lip_features(points: np.ndarray, patches: np.ndarray) -> dict[str, np.ndarray] | None:
    """Per-frame features from landmarks [n, 468, 2] and mouth patches [n, 16, 32], computed as
    `face_mesh.mouth_track` and `lipsync.mouth_features` compute them in stage 10; None if too few faces."""
    height = np.linalg.norm(points[:, FOREHEAD] - points[:, CHIN], axis=1)
    mouth = np.stack([np.linalg.norm(points[:, 13] - points[:, 14], axis=1) / height,
                      np.linalg.norm(points[:, 0] - points[:, 17], axis=1) / height,
                      polygon_area(points[:, list(INNER_LIP_RING)]) / height ** 2,
                      mouth_darkness(patches)], axis=1)
    mouth[~np.isfinite(mouth).all(axis=1)] = np.nan
    features = lipsync.mouth_features(mouth, ("gap", "area", "dark"))
    if features is None:
        return None
    return features


def load_faces(cache: Path) -> dict[str, Face]:
    faces = {}
    for path in sorted(cache.glob("*.npz")):
        data = np.load(path)
        points, patches, audio = data["points"], data["patches"], data["audio"]
        n = len(points)
        audio = np.pad(audio, (0, max(0, n * SAMPLES_PER_FRAME - len(audio))))[: n * SAMPLES_PER_FRAME]
        lips = lip_features(points, patches)
        if lips is None:
            print(f"{path.stem}: the face mesh found the face in fewer than half the frames; left out", file=sys.stderr)
            continue
        faces[path.stem] = Face(path.stem, SAME_SPEAKER.get(path.stem, path.stem), bool(data["speaker"]), lips, audio,
                                patches, np.isfinite(points).all(axis=(1, 2)))
    return faces


def shifted(audio: np.ndarray, ms: int) -> np.ndarray:
    """Audio delayed (ms > 0: silence first) or advanced (ms < 0: silence at the end), same length."""
    k = abs(ms) * 16
    if ms > 0:
        return np.r_[np.zeros(k, audio.dtype), audio[: len(audio) - k]]
    return np.r_[audio[k:], np.zeros(k, audio.dtype)]


def voice_for(face: Face, voice: np.ndarray) -> np.ndarray:
    """The voice's audio, cut to `face`'s length when longer: the copy is as long as the shorter of the two, as
    `curation_cases.dubbed` makes it (a face padded with silence would not pass the speech stage)."""
    return voice[: len(face.audio)]


def cases_of(faces: dict[str, Face]) -> list[tuple[Case, np.ndarray]]:
    """Every case with its audio, in a fixed order."""
    speakers = [f for f in faces.values() if f.speaker]
    out = []
    for face in speakers:
        out.append((Case("in sync", face.stem, face.stem, frozenset({face.group}), face.group), face.audio))
        for ms in SHIFTS_MS:
            out.append((Case(f"shift {ms:+d} ms", face.stem, face.stem, frozenset({face.group}), face.group),
                        shifted(face.audio, ms)))
        for voice in speakers:
            if voice.stem != face.stem:
                for part in range(VOICE_PARTS):        # the voice from its start, and from 1/3 and 2/3 in (wrapped)
                    audio = np.roll(voice.audio, -part * len(voice.audio) // VOICE_PARTS)
                    out.append((Case("dubbed", face.stem, voice.stem, frozenset({face.group, voice.group}), face.group),
                                voice_for(face, audio)))
    if SILENT in faces:
        for voice in speakers:
            out.append((Case("voice-over", SILENT, voice.stem, frozenset({voice.group}), voice.group),
                        voice_for(faces[SILENT], voice.audio)))
    return out


# ------------------------------------------------------------------------------------------- views
BANDS: dict[str, tuple[float, float] | None] = {"raw": None, "0.5-4": (0.5, 4.0), "1-8": (1.0, 8.0),
                                                 "0.5-10": (0.5, 10.0), "2-10": (2.0, 10.0)}
FEATURES = ("gap", "area", "dark")           # what stage 10 can compute (lipsync.mouth_features)
FEATURE_SETS = [fs for r in (1, 2, 3) for fs in itertools.combinations(FEATURES, r)]
WINDOWS = ((2, 3), (3, 3), (1, 3), (2, 4))
STATISTICS = ("z_far", "z_lags")
FALSE_VERIFY = 0.0002        # the verify level lets at most this share of chance copies through (see `thresholds`):
                             # 1 in 5,000: of the 560 dubbed and voice-over copies, about 0.1 expected verified


def filtered(x: np.ndarray, band: tuple[float, float] | None) -> np.ndarray:
    return x - x.mean() if band is None else lipsync.modulation(x, band)


def curves_of(faces: dict[str, Face], pairs: list[tuple[Case, np.ndarray]]) -> dict[str, list]:
    """Per 'feature/band': for every case, the lag correlations (+-SEARCH) and the far-shift chance correlations."""
    envelopes = [lipsync.speech_envelope(audio, (300.0, 3000.0)) for _, audio in pairs]
    out = {}
    for feature, band_name in itertools.product(FEATURES, BANDS):
        band = BANDS[band_name]
        lips_f = {stem: filtered(face.lips[feature], band) for stem, face in faces.items()}
        rows = []
        for (case, _), env in zip(pairs, envelopes):
            lips = lips_f[case.face]
            n = min(len(lips), len(env))
            speech = filtered(env[:n], band)
            rows.append((lipsync.lag_correlations(lips[:n], speech, SEARCH),
                         lipsync.chance_correlations(lips[:n], speech, SEARCH + lipsync.NULL_GUARD)))
        out[f"{feature}/{band_name}"] = rows
    return out


def peaks_of(rows: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per case, the peak of its curve over lags +-SEARCH: lag, z_far (above the far-shift chance values)
    and z_lags (above the other lags)."""
    lag, z_far, z_lags = [], [], []
    for corr, chance in rows:
        best = int(np.argmax(corr))
        rest = np.delete(corr, np.arange(max(0, best - 3), min(len(corr), best + 4)))
        lag.append(best - SEARCH)
        z_far.append((corr[best] - chance.mean()) / chance.std() if chance.std() > 1e-8 else 0.0)
        z_lags.append((corr[best] - rest.mean()) / rest.std() if rest.std() > 1e-8 else 0.0)
    return {"lag": np.array(lag), "z_far": np.array(z_far), "z_lags": np.array(z_lags)}


def fused_peaks(curves: dict[str, list], features: tuple[str, ...], band: str) -> dict[str, np.ndarray]:
    """One view: the features' correlation curves averaged (and their chance correlations, shift by shift,
    the same way), then the peak (`peaks_of`)."""
    return peaks_of([(np.mean([curves[f"{f}/{band}"][i][0] for f in features], axis=0),
                      np.mean([curves[f"{f}/{band}"][i][1] for f in features], axis=0))
                     for i in range(len(curves[f"{features[0]}/{band}"]))])


def measure_all(curves: dict[str, list]) -> dict[str, dict[str, np.ndarray]]:
    """Every fused view ('gap+dark/2-10') measured on every case."""
    return {f"{'+'.join(fs)}/{band}": fused_peaks(curves, fs, band) for fs in FEATURE_SETS for band in BANDS}


# ------------------------------------------------------------------- canonical-correlation views
CCA_BANDS = ("raw", "2-10", "1-8")
CCA_LOOKS = ("still", "motion")              # mouth patches as they are, or their change from the previous frame
CCA_MOUTH_DIMS = (2, 4, 8)                   # principal components of the mouth patches
CCA_SPEECH_DIMS = (1, 2, 4)                  # principal components of the 16 log mel bands
CCA_WINDOWS = ((-1, 2), (0, 2), (1, 2), (2, 2), (-1, 3), (0, 3), (1, 3), (2, 3))


def cca_view(look: str, mouth_dims: int, speech_dims: int, band: str) -> str:
    return f"cca:{look}{mouth_dims}x{speech_dims}/{band}"


def cca_curves_of(faces: dict[str, Face], pairs: list[tuple[Case, np.ndarray]]) -> dict[str, list]:
    """Per canonical view ('cca:motion4x2/2-10'): for every case, the first canonical correlation of the
    mouth's and the speech's principal components at lags +-SEARCH, and at the far circular shifts (chance),
    as `curves_of` gives them for one lip feature. Components are nested (the first 2 of 8 are the 2), so
    one cross-covariance per look and band serves every pair of dims."""
    top_mouth, top_speech = max(CCA_MOUTH_DIMS), max(CCA_SPEECH_DIMS)
    seen: dict[tuple[str, int, str, str], np.ndarray] = {}
    out: dict[str, list] = defaultdict(list)
    for case, audio in pairs:
        face = faces[case.face]
        n = min(len(face.patches), len(audio) // SAMPLES_PER_FRAME)   # a dubbed copy: as long as the shorter
        spectrum = lipsync.speech_spectrum(audio, n)               # SyncConfig's mel bands: 16, 100-7000 Hz
        for band in CCA_BANDS:
            heard = lipsync.principal(lipsync.modulation_columns(spectrum, BANDS[band]), top_speech)
            for look in CCA_LOOKS:
                key = (case.face, n, look, band)                  # the copy's own frames, as stage 10 sees them
                if key not in seen:
                    seen[key] = lipsync.principal(lipsync.modulation_columns(lipsync.mouth_appearance(
                        face.patches[:n], face.valid[:n], look == "motion"), BANDS[band]), top_mouth)
                cross = lipsync.cross_covariances(seen[key], heard)
                for p, q in itertools.product(CCA_MOUTH_DIMS, CCA_SPEECH_DIMS):
                    shifts = lipsync.canonical_shifts(cross[:, :p, :q])
                    out[cca_view(look, p, q, band)].append(lipsync.lags_and_chance(shifts, SEARCH))
    return out


def cca_measure_all(cca: dict[str, list]) -> dict[str, dict[str, np.ndarray]]:
    """Every canonical view ('cca:motion4x2/1-8') measured on every case."""
    return {view: peaks_of(rows) for view, rows in cca.items()}


# ------------------------------------------------------------------------------------ the decision
def corrected(z: np.ndarray, n_views: int) -> np.ndarray:
    """Sidak: the z whose one-sided tail equals the chance that any of `n_views` views reaches z."""
    from scipy.stats import norm

    return norm.isf(-np.expm1(n_views * np.log1p(-norm.sf(z)))) if n_views > 1 else z


def _corrected_view(measured: dict, view: str, statistic: str, n_views: int) -> np.ndarray:
    key = f"{statistic}@{n_views}"
    if key not in measured[view]:
        measured[view][key] = corrected(measured[view][statistic], n_views)
    return measured[view][key]


@dataclass(frozen=True)
class Candidate:
    views: tuple[str, ...]
    lead: int
    tolerance: int
    statistic: str                     # "z_far" or "z_lags"
    reject_tolerance: int = -1         # rejection looks only at peaks beyond lead +- this; -1: tolerance + 2

    def __post_init__(self) -> None:
        if self.reject_tolerance < 0:
            object.__setattr__(self, "reject_tolerance", self.tolerance + 2)

    def label(self) -> str:
        return f"{' | '.join(self.views)}; lead {self.lead}+-{self.tolerance}; {self.statistic}"


def scores(measured: dict, candidate: Candidate) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per case: the best corrected confidence of a view peaking in the lead window (-inf: none), of a view
    peaking beyond the reject window, of any view (wherever it peaks), and the deciding view's index."""
    lags = np.stack([measured[v]["lag"] for v in candidate.views])
    n = len(candidate.views)
    z = np.stack([_corrected_view(measured, v, candidate.statistic, n) for v in candidate.views])
    inside = np.abs(lags - candidate.lead) <= candidate.tolerance
    beyond = np.abs(lags - candidate.lead) > candidate.reject_tolerance
    z_in = np.where(inside, z, -np.inf).max(axis=0)
    z_out = np.where(beyond, z, -np.inf).max(axis=0)
    deciding = np.where(np.isfinite(z_in), np.where(inside, z, -np.inf).argmax(axis=0), z.argmax(axis=0))
    return z_in, z_out, z.max(axis=0), deciding


@dataclass(frozen=True)
class Thresholds:
    verify: float
    reject: float


def kinds(cases: list[Case]) -> dict[str, np.ndarray]:
    k = np.array([c.kind for c in cases])
    shift_ms = np.array([abs(int(c.kind.split()[1])) if c.kind.startswith("shift") else 0 for c in cases])
    return {"in_sync": k == "in sync", "chance": (k == "dubbed") | (k == "voice-over"),
            "far_shift": shift_ms >= 300, "near_shift": (shift_ms > 0) & (shift_ms < 300)}


def thresholds(candidate: Candidate, z_in, z_out, z_any, kind: dict[str, np.ndarray], train: np.ndarray) -> Thresholds:
    """The levels, from the training cases only.

    verify: a chance peak (dubbed and voice-over copies, wherever it falls) lands in the lead window on
    about window/search of the copies, so the level is the chance peaks' (1 - FALSE_VERIFY x search /
    window) quantile: at most FALSE_VERIFY of chance copies verified. It also clears every in-window
    peak of a training copy shifted by 300 ms or more. (Clearing every training chance copy's in-window
    peak instead was tried: one extreme copy then sets the level, and it verified 6 of 14 in-sync speakers
    cross-validated, with the same held-out dubbed copy still verified.)
    reject: above every chance peak and every training in-sync peak beyond the reject window, and never
    below the verify level."""
    chance = z_any[train & kind["chance"]]
    window = 2 * candidate.tolerance + 1
    quantile = 1.0 - FALSE_VERIFY * (2 * SEARCH + 1) / window
    shifted_in = z_in[train & kind["far_shift"]]
    verify = max(float(np.quantile(chance, quantile)), float(np.max(shifted_in, initial=-np.inf))) + MARGIN
    insync_out = z_out[train & kind["in_sync"]]
    reject = max(float(np.max(chance)), float(np.max(insync_out, initial=-np.inf))) + MARGIN
    return Thresholds(round(verify, 2), round(max(reject, verify), 2))


def verdicts(z_in: np.ndarray, z_out: np.ndarray, t: Thresholds) -> np.ndarray:
    """'verified', 'rejected' or 'unsure' per case."""
    return np.where(z_in >= t.verify, "verified", np.where(z_out >= t.reject, "rejected", "unsure"))


def candidates() -> list[Candidate]:
    """Every fused feature set at one band, or at two bands (max of the two, Sidak-corrected), in the lead
    windows of the lips (`WINDOWS`, both statistics); and every canonical view (`cca_view`) in the lead windows
    of `CCA_WINDOWS` (z_far)."""
    sets = []
    for fs in FEATURE_SETS:
        views = [f"{'+'.join(fs)}/{band}" for band in BANDS]
        sets += [(v,) for v in views] + list(itertools.combinations(views, 2))
    out = [Candidate(s, lead, tol, stat) for s in sets for lead, tol in WINDOWS for stat in STATISTICS]
    cca = [cca_view(look, p, q, band) for look in CCA_LOOKS for band in CCA_BANDS
           for p in CCA_MOUTH_DIMS for q in CCA_SPEECH_DIMS]
    return out + [Candidate((v,), lead, tol, "z_far") for v in cca for lead, tol in CCA_WINDOWS]


def select(measured, cands: list[Candidate], kind, train: np.ndarray) -> tuple[Candidate, Thresholds]:
    """The candidate verifying the most training in-sync speakers at its own training thresholds; ties go
    to fewer views, then to fewer training copies shifted by 200 ms verified, then to the larger soft margin."""
    best, best_key = None, None
    insync, near = train & kind["in_sync"], train & kind["near_shift"]
    for cand in cands:
        z_in, z_out, z_any, _ = scores(measured, cand)
        t = thresholds(cand, z_in, z_out, z_any, kind, train)
        verified = int((z_in[insync] >= t.verify).sum())
        soft = float(np.clip(np.where(np.isfinite(z_in[insync]), z_in[insync], t.verify - 2) - t.verify, -2, 1).mean())
        key = (verified, -len(cand.views), -int((z_in[near] >= t.verify).sum()), soft)
        if best_key is None or key > best_key:
            best, best_key = cand, key
    z_in, z_out, z_any, _ = scores(measured, best)
    return best, thresholds(best, z_in, z_out, z_any, kind, train)


# --------------------------------------------------------------------------------------- the tables
ORDER = ["in sync"] + [f"shift {ms:+d} ms" for ms in SHIFTS_MS] + ["dubbed", "voice-over"]


def table(cases: list[Case], verdict: np.ndarray) -> list[str]:
    tally: dict[str, Counter] = defaultdict(Counter)
    for case, v in zip(cases, verdict):
        tally[case.kind][v] += 1
    lines = [f"{'case':<18}{'n':>4}{'verified':>10}{'unsure':>8}{'rejected':>10}", "-" * 50]
    for kind in ORDER:
        if kind in tally:
            c = tally[kind]
            lines.append(f"{kind:<18}{sum(c.values()):>4}{c['verified']:>10}{c['unsure']:>8}{c['rejected']:>10}")
    return lines


PREVIOUS = (("gap/1-8",), 2, 4, 3.5, 5.0)   # the check before cross-validation: view, lead, tolerance, verify, reject


def shipped_candidate(config: SyncConfig) -> tuple[Candidate, Thresholds]:
    """The embedded default of `SyncConfig` as a candidate, with its levels."""
    names = {band: name for name, band in BANDS.items()}
    if config.proxy_signal == "canonical":
        views = tuple(cca_view(config.proxy_look, config.proxy_mouth_dims, config.proxy_speech_dims, names[band])
                      for band in config.proxy_bands)
    else:
        views = tuple(f"{'+'.join(config.proxy_features)}/{names[band]}" for band in config.proxy_bands)
    return (Candidate(views, config.proxy_lead_frames, config.proxy_lead_tolerance, "z_far", config.proxy_reject_tolerance),
            Thresholds(config.proxy_min_z, config.proxy_reject_z))


def old_verdicts(measured, candidate: Candidate, t: Thresholds) -> np.ndarray:
    """The previous rule: one window for both verdicts (reject any peak outside it at the reject level)."""
    view = measured[candidate.views[0]]
    off = np.abs(view["lag"] - candidate.lead)
    z = view[candidate.statistic]
    return np.where((off <= candidate.tolerance) & (z >= t.verify), "verified",
                    np.where((off > candidate.tolerance) & (z >= t.reject), "rejected", "unsure"))


def cross_validate(measured, cases: list[Case], cands: list[Candidate]) -> tuple[np.ndarray, list[str]]:
    """Held-out verdicts for every case (each judged in the fold of its face's speaker), and one line per fold."""
    kind = kinds(cases)
    groups = sorted({g for c in cases for g in c.groups})
    verdict = np.full(len(cases), "", dtype=object)
    lines = []
    for held in groups:
        train = np.array([held not in c.groups for c in cases])
        test = np.array([c.judged == held for c in cases])
        cand, t = select(measured, cands, kind, train)
        z_in, z_out, _, _ = scores(measured, cand)
        verdict[test] = verdicts(z_in, z_out, t)[test]
        insync = test & kind["in_sync"]
        wrong = test & (kind["chance"] | kind["far_shift"]) & (verdict == "verified")
        for i in np.where(wrong)[0]:
            lines.append(f"    verified: {cases[i].kind} {cases[i].face} / {cases[i].voice}: z {z_in[i]:.2f}")
        lines.append(f"{held[:40]:<40} {cand.label()}; verify {t.verify}, reject {t.reject} -> in sync "
                     f"{', '.join(verdict[insync])}")
    return verdict, lines


def side_by_side(left: list[str], right: list[str], gap: int = 4) -> list[str]:
    width = max(len(line) for line in left) + gap
    return [f"{a:<{width}}{b}" for a, b in itertools.zip_longest(left, right, fillvalue="")]


def report(cache: Path, folds: bool = True) -> list[str]:
    """The in-sample tables (the previous check, the shipped default) and the cross-validated one."""
    faces = load_faces(cache)
    if not any(f.speaker for f in faces.values()):
        raise FileNotFoundError(f"no cached features in {cache}: run benchmarks/sync_features.py first")
    pairs = cases_of(faces)
    cases = [c for c, _ in pairs]
    curves = curves_of(faces, pairs)
    measured = {**measure_all(curves), **cca_measure_all(cca_curves_of(faces, pairs))}
    cands = candidates()
    kind = kinds(cases)
    out = [f"{sum(f.speaker for f in faces.values())} speakers, {len(cases)} cases, {len(cands)} candidates"]

    views, lead, tolerance, verify, reject = PREVIOUS
    previous = table(cases, old_verdicts(measured, Candidate(views, lead, tolerance, "z_far"), Thresholds(verify, reject)))
    cand, t = select(measured, cands, kind, np.ones(len(cases), bool))
    z_in, z_out, _, _ = scores(measured, cand)
    chosen = table(cases, verdicts(z_in, z_out, t))
    out += ["", f"== in sample, previous check ({views[0]}; lead {lead}+-{tolerance}; verify {verify}, reject {reject})"
                f" | chosen on all speakers ({cand.label()}; verify {t.verify}, reject {t.reject})"]
    out += side_by_side(previous, chosen)
    shipped, levels = shipped_candidate(SyncConfig())
    if (shipped, levels) != (cand, t):
        z_in, z_out, _, _ = scores(measured, shipped)
        out += ["", f"== in sample, the shipped SyncConfig ({shipped.label()}; verify {levels.verify}, "
                    f"reject {levels.reject}): differs from the choice above"]
        out += table(cases, verdicts(z_in, z_out, levels))

    verdict, lines = cross_validate(measured, cases, cands)
    if folds:
        out += ["", "== leave-one-speaker-out: the choice made without each speaker, and its in-sync verdict", *lines]
    out += ["", "== cross-validated (each speaker judged by the choice made without it) | in sample (shipped)"]
    out += side_by_side(table(cases, verdict), chosen)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/sync_feats"))
    args = parser.parse_args()
    try:
        print("\n".join(report(args.cache)))
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
