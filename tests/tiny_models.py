"""Tiny models in the real weight formats, for tests (shared: any engineer may import these factories).

Each factory writes files exactly as the real weights come (ONNX with the real input/output names and
shapes, a torch state dict with the original keys, transformers folders via `save_pretrained`), so
tests load them through the same code path real weights take. The ONNX detectors return fixed,
documented detections (their outputs add 0 x the input mean to a constant), which lets tests assert
decisions; the networks (SyncNet, wav2vec2, Whisper) are random.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

OPSET = 17
WHISPER_LANGUAGES = {"<|en|>": 50259, "<|zh|>": 50260, "<|de|>": 50261, "<|es|>": 50262}


def _constant_onnx(path: Path, input_name: str, input_shape: list, outputs: dict[str, np.ndarray],
                   first_ops: tuple[str, ...] = ()) -> Path:
    """An ONNX graph whose outputs are constants plus 0 x mean(input), so the input is really consumed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0, name="ReduceMean_0"),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"], name="Mul_0")]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    graph_outputs = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_const"))
        nodes.append(helper.make_node("Add", [f"{name}_const", "nothing"], [name], name=f"Add_{name}"))
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    if first_ops:  # names some exporters give the first nodes (insightface reads them to pick mean/std)
        nodes[0].name, nodes[1].name = first_ops
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
                              graph_outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_tiny_yolox(path: Path, size: int = 64) -> Path:
    """rtmlib YOLOX person detector: input `images` [1, 3, size, size], output `output` [1, anchors, 85]
    (raw xy/wh, objectness and class scores, no NMS). It detects one person covering the whole input."""
    strides = (8, 16, 32)
    anchors = sum((size // s) ** 2 for s in strides)
    out = np.zeros((1, anchors, 85), np.float32)
    first32 = anchors - (size // 32) ** 2          # cell (0, 0) of stride 32
    out[0, first32, :4] = [size / 2 / 32, size / 2 / 32, np.log(size / 32), np.log(size / 32)]
    out[0, first32, 4] = 1.0                        # objectness
    out[0, first32, 5] = 1.0                        # class 0 = person
    return _constant_onnx(path, "images", [1, 3, size, size], {"output": out})


def write_tiny_dwpose(path: Path, height: int = 256, width: int = 192, hands_at_center: bool = True) -> Path:
    """DWpose / RTMW wholebody: input `input` [1, 3, H, W], outputs `simcc_x` [1, 133, 2W] and
    `simcc_y` [1, 133, 2H]. Hand keypoints 91-132 peak (score 1) at the centre of the person box;
    every other keypoint has score 0."""
    simcc_x = np.zeros((1, 133, 2 * width), np.float32)
    simcc_y = np.zeros((1, 133, 2 * height), np.float32)
    if hands_at_center:
        simcc_x[0, 91:133, width] = 1.0
        simcc_y[0, 91:133, height] = 1.0
    return _constant_onnx(path, "input", [1, 3, height, width], {"simcc_x": simcc_x, "simcc_y": simcc_y})


def write_tiny_genderage(path: Path, male: bool = True, age: float = 42.0) -> Path:
    """insightface genderage: input `data` [1, 3, 96, 96], output `fc1` [1, 3] = female/male logits, age/100.
    The first nodes are named Sub/Mul like the mxnet exports, so insightface's mean 0 / std 1 applies."""
    logits = [0.1, 0.9] if male else [0.9, 0.1]
    out = np.array([[*logits, age / 100]], np.float32)
    return _constant_onnx(path, "data", [1, 3, 96, 96], {"fc1": out}, first_ops=("_minusscalar0", "_mulscalar0"))


def write_tiny_scrfd(path: Path, box: tuple[float, float, float, float] = (192, 192, 448, 448),
                     size: int = 640, score: float = 0.9) -> Path:
    """insightface SCRFD with keypoints (scrfd_*_bnkps): input `input.1` [1, 3, size, size], nine outputs
    score_{8,16,32} [n, 1], bbox_{8,16,32} [n, 4] (distances / stride), kps_{8,16,32} [n, 10], two anchors
    per cell. One face at `box` (x0, y0, x1, y1 in input pixels), found by the stride-32 anchor nearest its centre."""
    outputs: dict[str, np.ndarray] = {}
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            outputs[f"{kind}_{stride}"] = np.zeros(((size // stride) ** 2 * 2, width), np.float32)
    cells = size // 32
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    col, row = min(cells - 1, round(cx / 32)), min(cells - 1, round(cy / 32))
    anchor = (row * cells + col) * 2
    ax, ay = col * 32, row * 32
    outputs["score_32"][anchor, 0] = score
    outputs["bbox_32"][anchor] = [(ax - box[0]) / 32, (ay - box[1]) / 32, (box[2] - ax) / 32, (box[3] - ay) / 32]
    return _constant_onnx(path, "input.1", [1, 3, size, size], outputs)


def write_tiny_syncnet(path: Path, seed: int = 0) -> Path:
    """A random SyncNet state dict with the original syncnet_v2.model keys (no num_batches_tracked)."""
    import torch

    from vividhead.models.syncnet import SyncNet

    torch.manual_seed(seed)
    state = {k: v for k, v in SyncNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def write_tiny_wav2vec2(folder: Path) -> Path:
    """A random wav2vec2 saved with save_pretrained (config.json, weights, preprocessor config)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    Wav2Vec2Model(config).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=16000, return_attention_mask=False).save_pretrained(folder)
    return folder


def write_tiny_whisper(folder: Path) -> Path:
    """A random multilingual-layout Whisper saved with save_pretrained, with a generation config that
    lists language tokens (`lang_to_id`) as the released checkpoints do, and its feature extractor."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=51865, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                           decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500, max_target_positions=64,
                           decoder_start_token_id=50258, pad_token_id=50257, bos_token_id=50257, eos_token_id=50257)
    WhisperForConditionalGeneration(config).eval().save_pretrained(folder)
    generation = GenerationConfig(decoder_start_token_id=50258, lang_to_id=WHISPER_LANGUAGES,
                                  task_to_id={"transcribe": 50359, "translate": 50358}, is_multilingual=True)
    generation.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder
