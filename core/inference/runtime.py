"""How a registered model runs for inference: PyTorch or ONNX Runtime, fp32 or int8.

``load_predictor`` is the one place that turns a model folder into a ready ``EmotionPredictor``
for serving and benchmarking; training keeps plain PyTorch.

- ``torch``: the saved transformers model; int8 is PyTorch's dynamic quantization of every
  Linear layer.
- ``onnx``: the same model exported to ONNX once per model version (cached beside the
  downloaded version, under a file lock so several workers export it only once) and run by ONNX
  Runtime; int8 is ONNX Runtime's dynamic quantization of the exported graph. One ``run`` call
  is one C++ call that releases the GIL for the whole forward, so the HTTP side of the process
  keeps its share of the CPU; PyTorch's eager forward takes the GIL back between operators.
  The graph also outputs the novelty features (``pooled``: the mean over the layers of each
  layer's token mean), which novelty scoring reads, so one run gives both.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from core.inference.novelty import FIRST_POOLED_LAYER, POOLING_TAG
from core.inference.predictor import EmotionPredictor

log = logging.getLogger(__name__)

Runtime = Literal["torch", "onnx"]
ONNX_OPSET = 17
ONNX_INPUTS = ("input_ids", "attention_mask")
ONNX_OUTPUTS = ("logits", "pooled")
# The file names carry the graph's outputs: a cache exported before ``pooled`` is not reused.
# The tag says which features the graph's ``pooled`` is (the layer mean): a graph cached for
# other features (the last layer's, before it) is not reused.
ONNX_FILE = f"model-{POOLING_TAG}.onnx"
ONNX_INT8_FILE = f"model-{POOLING_TAG}-int8.onnx"


def load_predictor(
    model_dir: Path,
    *,
    runtime: Runtime = "torch",
    quantize: bool = False,
    threads: int | None = None,
    cache_dir: Path | None = None,
    spinning: bool = False,
    **predictor_options: Any,
) -> EmotionPredictor:
    """A predictor for the model saved in ``model_dir`` on ``runtime``, int8 when ``quantize``.

    ``threads`` is the intra-op thread count (default: the runtime's own). ``cache_dir`` holds
    the ONNX files (default: ``model_dir``'s sibling ``onnx``). ``spinning`` lets ONNX Runtime's
    intra-op threads spin while they wait for work (a pool of one thread has none to spin); off,
    as measured best under load.

    NumPy's BLAS is held to one thread: its only work here is novelty's small matrix products,
    and OpenBLAS's own threads, spinning after each, took a third of a two-worker service's
    throughput from the runtime's threads at 32 clients (measured in ``make bench``).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    if runtime == "torch":
        predictor = EmotionPredictor.from_dir(model_dir, **predictor_options)
        if quantize:
            predictor.model = quantize_dynamic_int8(predictor.model)
        if threads:
            torch.set_num_threads(threads)
        return predictor
    if runtime == "onnx":
        from transformers import AutoConfig, AutoTokenizer

        path = exported_onnx(model_dir, cache_dir or model_dir.parent / "onnx", quantize)
        model = OnnxSequenceClassifier(path, AutoConfig.from_pretrained(model_dir), threads, spinning)
        return EmotionPredictor(model, AutoTokenizer.from_pretrained(model_dir), **predictor_options)
    raise ValueError(f"unknown runtime '{runtime}'; expected 'torch' or 'onnx'")


def quantize_dynamic_int8(model: torch.nn.Module) -> torch.nn.Module:
    """int8 weights for every Linear layer, activations quantized on the fly (CPU inference)."""
    quantized: torch.nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
        model, {torch.nn.Linear}, dtype=torch.qint8
    )
    return quantized


def exported_onnx(model_dir: Path, cache_dir: Path, quantize: bool) -> Path:
    """The model as an ONNX file (int8 when ``quantize``), exported on first use and cached."""
    from filelock import FileLock

    cache_dir.mkdir(parents=True, exist_ok=True)
    fp32 = cache_dir / ONNX_FILE
    int8 = cache_dir / ONNX_INT8_FILE
    with FileLock(str(cache_dir / ".lock")):
        if not fp32.is_file():
            _export(model_dir, fp32)
        if quantize and not int8.is_file():
            _quantize(fp32, int8)
    return int8 if quantize else fp32


def _export(model_dir: Path, target: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # Eager attention: SDPA may drop an all-ones mask while tracing, and the traced graph would
    # then ignore padding for every later batch.
    model = _WithPooled(
        AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # A padded example, so the mask's path through the graph is the one traced.
    example = tokenizer(
        ["an example", "a longer example with a few more words"], padding=True, return_tensors="pt"
    )
    partial = target.with_suffix(".partial")
    log.info("exporting %s to ONNX (once per model version)", model_dir)
    with torch.inference_mode(), warnings.catch_warnings():
        # The tracer's notes on the mask arithmetic are expected for this graph; its output is
        # checked against PyTorch's with padded and unpadded batches in the tests.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index", category=UserWarning)
        torch.onnx.export(
            model,
            (example["input_ids"], example["attention_mask"]),
            str(partial),
            input_names=list(ONNX_INPUTS),
            output_names=list(ONNX_OUTPUTS),
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in ONNX_INPUTS}
            | {name: {0: "batch"} for name in ONNX_OUTPUTS},
            opset_version=ONNX_OPSET,
            dynamo=False,  # the TorchScript exporter needs no onnxscript and handles this model fully
        )
    partial.rename(target)


def _quantize(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    partial = target.with_suffix(".partial")
    quantize_dynamic(str(source), str(partial), weight_type=QuantType.QInt8)
    partial.rename(target)


class _WithPooled(torch.nn.Module):
    """The classifier's logits and its novelty features (``core.inference.novelty.layer_mean``,
    in torch so the graph computes them), for export."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        result = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        layers = result.hidden_states[FIRST_POOLED_LAYER:]
        hidden = torch.stack(layers).mean(dim=0)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return result.logits, (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


@dataclass
class OnnxOutput:
    logits: torch.Tensor
    pooled: np.ndarray | None = None


class OnnxSequenceClassifier:
    """An exported sequence classifier on ONNX Runtime, called like the transformers model it
    came from (``model(input_ids=..., attention_mask=...).logits``), with its ``config``."""

    def __init__(self, path: Path, config: Any, threads: int | None = None, spinning: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.path = path
        self.config = config
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def eval(self) -> OnnxSequenceClassifier:
        return self

    def __call__(
        self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False
    ) -> OnnxOutput:
        """``output_hidden_states`` asks for ``pooled`` (the graph has no other hidden state)."""
        feeds = {"input_ids": _numpy(input_ids), "attention_mask": _numpy(attention_mask)}
        if output_hidden_states:
            logits, pooled = self.session.run(list(ONNX_OUTPUTS), feeds)
            return OnnxOutput(torch.from_numpy(logits), pooled)
        (logits,) = self.session.run(["logits"], feeds)
        return OnnxOutput(torch.from_numpy(logits))


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    return values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
