#!/usr/bin/env python3
"""Build SqueezeNet 1.1 as an ONNX model with seeded random weights, for throughput benchmarks.

No pretrained weights can be downloaded, so the network is written out node by node with the
`onnx` helper API. The architecture is exactly torchvision's `squeezenet1_1` (Dropout omitted,
as at inference); the weights are random: every conv gets He/Kaiming-normal weights
(std = sqrt(2 / fan_in), fan_in = in_channels * k * k) drawn from numpy's default_rng(SEED), and
zero biases. The model therefore costs what the real one costs to run, but its outputs mean
nothing: `labels.txt` holds placeholder names `class_000` .. `class_999`, not ImageNet classes.

  input   "input"   float32 [batch, 3, 224, 224]   (batch is a dynamic dimension)
  output  "logits"  float32 [batch, 1000]

Opset 17 and IR version 8, as models/digits: old enough for any recent ONNX Runtime (checked with
1.31.1), rather than the newer IR version onnx itself would stamp. The output is byte-for-byte
the same on every run.

Run: python3 models/squeezenet/make_model.py   (needs numpy onnx)
"""

import hashlib
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = pathlib.Path(__file__).resolve().parent
SEED = 11
NUM_CLASSES = 1000

# (in_channels, squeeze, expand1x1, expand3x3) of each Fire module, "pool" for a MaxPool,
# in torchvision squeezenet1_1's order. Each Fire outputs expand1x1 + expand3x3 channels.
FEATURES = [
    (64, 16, 64, 64), (128, 16, 64, 64), "pool",
    (128, 32, 128, 128), (256, 32, 128, 128), "pool",
    (256, 48, 192, 192), (384, 48, 192, 192), (384, 64, 256, 256), (512, 64, 256, 256),
]


class Builder:
    """Collects nodes and initializers; each method appends layers and returns its output name."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.params = 0

    def conv_relu(self, x: str, name: str, c_in: int, c_out: int, k: int,
                  stride: int = 1, pad: int = 0, out: str | None = None) -> str:
        """Conv2d(c_in, c_out, k) with He-normal weights and zero bias, then ReLU."""
        std = np.sqrt(2.0 / (c_in * k * k))
        w = (self.rng.standard_normal((c_out, c_in, k, k)) * std).astype(np.float32)
        b = np.zeros(c_out, dtype=np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}.weight"),
                       numpy_helper.from_array(b, f"{name}.bias")]
        self.params += w.size + b.size
        self.nodes.append(helper.make_node(
            "Conv", [x, f"{name}.weight", f"{name}.bias"], [f"{name}.conv"], name=name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4))
        out = out or f"{name}.relu"
        self.nodes.append(helper.make_node("Relu", [f"{name}.conv"], [out], name=f"{name}_relu"))
        return out

    def maxpool(self, x: str, name: str) -> str:
        """MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)."""
        self.nodes.append(helper.make_node(
            "MaxPool", [x], [name], name=name, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1))
        return name

    def fire(self, x: str, name: str, c_in: int, squeeze: int, e1: int, e3: int) -> str:
        """Fire module: 1x1 squeeze, then 1x1 and 3x3 (pad 1) expands concatenated on channels."""
        s = self.conv_relu(x, f"{name}.squeeze", c_in, squeeze, 1)
        a = self.conv_relu(s, f"{name}.expand1x1", squeeze, e1, 1)
        b = self.conv_relu(s, f"{name}.expand3x3", squeeze, e3, 3, pad=1)
        self.nodes.append(helper.make_node("Concat", [a, b], [f"{name}.out"], name=name, axis=1))
        return f"{name}.out"


def build_model() -> tuple[onnx.ModelProto, int]:
    g = Builder(SEED)
    # features[0..2]: Conv2d(3, 64, k3, s2) + ReLU + MaxPool; 224 -> 111 -> 55.
    x = g.conv_relu("input", "features.0", 3, 64, 3, stride=2)
    x = g.maxpool(x, "features.2")
    # features[3..12]: Fire modules with two more pools; 55 -> 27 -> 13.
    for i, spec in enumerate(FEATURES, start=3):
        x = g.maxpool(x, f"features.{i}") if spec == "pool" else g.fire(x, f"features.{i}", *spec)
    # classifier (Dropout omitted): Conv2d(512, 1000, k1) + ReLU, global average pool, flatten.
    x = g.conv_relu(x, "classifier.1", 512, NUM_CLASSES, 1)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="classifier.3"))
    g.nodes.append(helper.make_node("Flatten", ["pooled"], ["logits"], name="flatten", axis=1))

    graph = helper.make_graph(
        g.nodes,
        "squeezenet1_1",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="warren make_model.py")
    model.ir_version = 8
    # full_check also runs shape inference, which confirms the declared [batch, 1000] output.
    onnx.checker.check_model(model, full_check=True)
    return model, g.params


def main() -> None:
    model, params = build_model()
    path = HERE / "squeezenet1_1_f32.onnx"
    data = model.SerializeToString()
    path.write_bytes(data)
    print(f"wrote {path}: {len(data)} bytes, {params} parameters, "
          f"sha256 {hashlib.sha256(data).hexdigest()}")
    labels = HERE / "labels.txt"
    labels.write_text("".join(f"class_{i:03d}\n" for i in range(NUM_CLASSES)))
    print(f"wrote {labels}: {NUM_CLASSES} placeholder labels")


if __name__ == "__main__":
    main()
