"""Attribute models: insightface gender/age (ONNX) and spoken-language ID (a local Whisper folder).

- `GenderAge` runs an insightface `genderage.onnx` through onnxruntime, preprocessed as insightface
  does it: the face box centred in the 96x96 input at 1.5x its larger side, RGB, mean/std read from
  the graph (0/1 for the mxnet exports, else 127.5/128). Output [1, 3]: female/male logits, age / 100.
- `LanguageId` loads a transformers Whisper folder and scores the language tokens the model's
  generation config lists (`lang_to_id`) after the start-of-transcript token, as Whisper's own
  language detection does. No tokenizer files are needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vividhead.weights_verify import verify_file, verify_weights


@dataclass(frozen=True)
class GenderAgeResult:
    gender: str      # "female" or "male"
    age: float       # years


class GenderAge:
    """insightface gender/age ONNX from a local path."""

    def __init__(self, path: Path) -> None:
        import onnx
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"genderage weights {path} do not exist (expected insightface genderage.onnx)")
        verify_file("genderage", path)   # against its lock record (the graph is checked below)
        try:
            graph = onnx.load(str(path)).graph
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # noqa: BLE001 - any load failure is the same user error
            raise ValueError(f"genderage weights {path} are unreadable as ONNX: {exc}") from exc
        names = [node.name for node in graph.node[:8]]
        has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
        has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
        bn_data = any(node.name == "bn_data" for node in graph.node[:3])
        self.mean, self.std = (0.0, 1.0) if (has_sub and has_mul) or bn_data else (127.5, 128.0)
        inp, outs = self.session.get_inputs()[0], self.session.get_outputs()
        if len(inp.shape) != 4 or not isinstance(inp.shape[2], int) or len(outs) != 1 or outs[0].shape[-1] != 3:
            raise ValueError(f"genderage weights {path}: input {inp.shape} / outputs {[o.shape for o in outs]}, "
                             "expected [1, 3, S, S] -> [1, 3]")
        self.input_name, self.output_name, self.size = inp.name, outs[0].name, int(inp.shape[2])

    def __call__(self, rgb: np.ndarray, box: np.ndarray) -> GenderAgeResult:
        """Gender and age of the face in `box` (x0, y0, x1, y1 pixels) of an RGB image."""
        x0, y0, x1, y1 = (float(v) for v in box)
        scale = self.size / (max(x1 - x0, y1 - y0) * 1.5)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        matrix = np.array([[scale, 0, self.size / 2 - cx * scale], [0, scale, self.size / 2 - cy * scale]])
        face = cv2.warpAffine(rgb, matrix, (self.size, self.size), borderValue=0.0)
        blob = ((face.astype(np.float32) - self.mean) / self.std).transpose(2, 0, 1)[None]
        pred = self.session.run([self.output_name], {self.input_name: blob})[0][0]
        return GenderAgeResult("male" if int(np.argmax(pred[:2])) == 1 else "female", float(pred[2]) * 100)


@dataclass(frozen=True)
class LanguageResult:
    language: str       # ISO code as in Whisper's tokens, e.g. "en"
    probability: float  # softmax over the language tokens only


class LanguageId:
    """Whisper language identification from a local transformers folder."""

    def __init__(self, path: Path, device: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import GenerationConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"language-ID weights {path}: not a transformers Whisper folder (config.json missing)")
        verify_weights("language_id", path)   # lock record; config.json model_type
        try:
            self.model = WhisperForConditionalGeneration.from_pretrained(str(path)).eval()
            generation = GenerationConfig.from_pretrained(str(path))
        except Exception as exc:  # noqa: BLE001 - any load failure is the same user error
            raise ValueError(f"language-ID weights {path} are unreadable as a Whisper model: {exc}") from exc
        lang_to_id = getattr(generation, "lang_to_id", None)
        if not lang_to_id:
            raise ValueError(f"language-ID weights {path}: generation_config.json has no lang_to_id "
                             "(a multilingual Whisper is needed)")
        self.codes = [token.strip("<|>") for token in lang_to_id]
        self.token_ids = torch.tensor(list(lang_to_id.values()))
        self.start_id = generation.decoder_start_token_id
        if (path / "preprocessor_config.json").is_file():
            self.features = WhisperFeatureExtractor.from_pretrained(str(path))
        else:
            self.features = WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)
        self._torch = torch

    def __call__(self, audio_16k: np.ndarray) -> LanguageResult:
        torch = self._torch
        inputs = self.features(audio_16k, sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():
            logits = self.model(input_features=inputs.to(self.device, self.model.dtype),
                                decoder_input_ids=torch.tensor([[self.start_id]], device=self.device)).logits
        probs = torch.softmax(logits[0, -1, self.token_ids.to(self.device)].float(), dim=-1).cpu()
        best = int(torch.argmax(probs))
        return LanguageResult(self.codes[best], float(probs[best]))
