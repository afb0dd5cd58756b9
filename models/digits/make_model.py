#!/usr/bin/env python3
"""Train Warren's sample classifier and export it to ONNX, with sample images and expected answers.

The model is a small multi-layer perceptron trained by scikit-learn on its bundled `digits` data
(1797 8x8 grey images of hand-written digits, no download). Its weights are written into an ONNX
graph by hand so that the graph declares the input Warren preprocesses to: NCHW `[N, 1, 8, 8]`,
pixels scaled to [0, 1] then normalised with mean 0.5 and std 0.5. Two files are made:

  digits_f32.onnx   input float32
  digits_f16.onnx   input float16 (cast to float32 inside), to exercise Warren's f16 path

Every held-out test image is written as a 32x32 PNG (each source pixel a 4x4 block, so a
nearest-neighbour resize back to 8x8 is exact), and `expected.json` records, per file, the true
label and the label ONNX Runtime predicts, plus the accuracy over all of them. Warren's end-to-end
test sends every sample through RabbitMQ and must reproduce those answers.

Run: python3 models/digits/make_model.py   (needs numpy scikit-learn onnx pillow onnxruntime)
"""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

HERE = pathlib.Path(__file__).resolve().parent
SEED = 7
MEAN, STD = 0.5, 0.5
UPSCALE = 4


def normalise(pixels01: np.ndarray) -> np.ndarray:
    return (pixels01 - MEAN) / STD


def build_graph(clf: MLPClassifier, input_type: int) -> onnx.ModelProto:
    nodes, inits = [], []
    src = "input"
    if input_type == TensorProto.FLOAT16:
        nodes.append(helper.make_node("Cast", ["input"], ["input_f32"], to=TensorProto.FLOAT))
        src = "input_f32"
    nodes.append(helper.make_node("Flatten", [src], ["flat"], axis=1))
    prev = "flat"
    layers = list(zip(clf.coefs_, clf.intercepts_))
    for i, (w, b) in enumerate(layers):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"W{i}"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"B{i}"))
        out = "logits" if i == len(layers) - 1 else f"h{i}"
        gemm_out = out if i == len(layers) - 1 else f"g{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"B{i}"], [gemm_out]))
        if i != len(layers) - 1:
            nodes.append(helper.make_node("Relu", [gemm_out], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "warren_digits",
        [helper.make_tensor_value_info("input", input_type, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="warren make_model.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main() -> None:
    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0  # [n, 8, 8] in [0, 1]
    y = digits.target
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=SEED, stratify=y)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=600, random_state=SEED)
    clf.fit(normalise(x_train).reshape(len(x_train), -1), y_train)

    samples = HERE / "samples"
    samples.mkdir(exist_ok=True)
    for old in samples.glob("*.png"):
        old.unlink()
    files = []
    for i, (img, label) in enumerate(zip(x_test, y_test)):
        grey = np.rint(img * 255.0).astype(np.uint8)
        big = np.kron(grey, np.ones((UPSCALE, UPSCALE), dtype=np.uint8))
        name = f"{i:03d}_label{label}.png"
        Image.fromarray(big, mode="L").save(samples / name, optimize=True)
        files.append((name, int(label)))

    # Measure with ONNX Runtime on exactly what Warren will compute: read each PNG back,
    # nearest-neighbour downscale (pick one pixel per block), scale to [0, 1], normalise.
    results = {}
    for variant, input_type, dtype in (("f32", TensorProto.FLOAT, np.float32),
                                       ("f16", TensorProto.FLOAT16, np.float16)):
        model = build_graph(clf, input_type)
        path = HERE / f"digits_{variant}.onnx"
        onnx.save(model, path)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        batch = []
        for name, _ in files:
            px = np.asarray(Image.open(samples / name).convert("L"), dtype=np.float32)
            small = px[::UPSCALE, ::UPSCALE] / 255.0
            batch.append(normalise(small)[None, :, :])
        logits = sess.run(["logits"], {"input": np.stack(batch).astype(dtype)})[0]
        predicted = logits.argmax(axis=1)
        correct = int(sum(int(p) == t for p, (_, t) in zip(predicted, files)))
        results[variant] = {
            "accuracy": correct / len(files),
            "correct": correct,
            "predicted": {name: int(p) for (name, _), p in zip(files, predicted)},
        }
        print(f"{variant}: {correct}/{len(files)} = {correct / len(files):.4f}")

    (HERE / "labels.txt").write_text("".join(f"{d}\n" for d in range(10)))
    expected = {
        "samples": len(files),
        "truth": {name: label for name, label in files},
        "models": results,
        "preprocessing": {"width": 8, "height": 8, "channels": 1, "mean": [MEAN], "std": [STD],
                          "resize_filter": "nearest"},
    }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
