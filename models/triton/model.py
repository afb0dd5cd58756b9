"""Warren's Triton Python-backend model: runs one ONNX classifier with ONNX Runtime on the CPU.

Copied verbatim into `<repository>/<model>/1/model.py` by `scripts/triton.sh repo`; the model's
`config.pbtxt` says which ONNX file to run and declares its inputs and outputs (see README.md).

Where its Python packages come from: Triton's Python stub embeds an isolated interpreter, so it
ignores PYTHONPATH and sees only the base Python's site-packages, which have no numpy. This file
therefore puts the venv's site-packages on `sys.path` itself, *at import time*, because the stub
imports `triton_python_backend_utils` (which imports numpy) right after importing this module,
before `initialize` could read the config. The directories (those that exist) come from, in
this order, both of:
  1. the environment variable WARREN_TRITON_SITE_PACKAGES (os.pathsep-separated; the stub
     inherits tritonserver's environment, `scripts/triton.sh serve` sets it);
  2. the `site_packages` parameter of this model's `config.pbtxt`, read from disk (two levels
     up from this file), so a repository written by `scripts/triton.sh repo` works whoever
     starts the server.

Parameters read from config.pbtxt (`parameters { key: ... value: { string_value: ... } }`):
  onnx_path      the ONNX file; relative paths are taken from the model directory;
                 default `<version dir>/model.onnx`
  site_packages  see above
  intra_op_threads  ONNX Runtime intra-op threads, default 1 (spinning is always off)
  delay_ms       a drill: wait this long before each execution, default 0 (Warren's tests use
                 it to make a model slower than the client's deadline)
  extra_classes  a drill: append this many classes (scores of -30) to every output, default 0
                 (with the config's output dims raised to match: Warren's tests load it as a
                 new version with another class count under the same name)

With dynamic batching Triton hands `execute` several requests at once: their inputs are
concatenated along axis 0, run in one session call, and the outputs split back per request. A
request that cannot be served gets its own error response; the others are still answered.
"""

import json
import os
import re
import sys
import time


def _site_packages():
    paths = os.environ.get("WARREN_TRITON_SITE_PACKAGES", "").split(os.pathsep)
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "config.pbtxt")
    try:
        with open(config, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        text = ""
    match = re.search(r'key\s*:\s*"site_packages"\s*,?\s*value\s*:?\s*\{\s*string_value\s*:\s*"([^"]*)"',
                      text)
    if match:
        paths += match.group(1).split(os.pathsep)
    return [p for p in paths if p and os.path.isdir(p)]


for _path in reversed(_site_packages()):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _param(config, key, default=None):
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value != "" else default


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        model_dir = args["model_repository"]  # the model's directory: <repository>/<model>
        version_dir = os.path.join(model_dir, args["model_version"])
        path = _param(config, "onnx_path", os.path.join(version_dir, "model.onnx"))
        if not os.path.isabs(path):
            path = os.path.join(model_dir, path)

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(_param(config, "intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, sess_options=options,
                                            providers=["CPUExecutionProvider"])

        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [(i["name"], pb_utils.triton_string_to_numpy(i["data_type"]))
                       for i in config["input"]]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"]))
                        for o in config["output"]]
        ort_inputs = {i.name: i.type for i in self.session.get_inputs()}
        ort_outputs = {o.name for o in self.session.get_outputs()}
        for name, _ in self.inputs:
            if name not in ort_inputs:
                raise ValueError(f"config input {name!r} is not an input of {path} "
                                 f"(it has {sorted(ort_inputs)})")
        for name, _ in self.outputs:
            if name not in ort_outputs:
                raise ValueError(f"config output {name!r} is not an output of {path} "
                                 f"(it has {sorted(ort_outputs)})")
        # Feed ONNX Runtime the element type the graph declares, whatever the config says.
        self.feed_types = {name: _ORT_TO_NUMPY.get(ort_inputs[name]) for name, _ in self.inputs}
        self.output_names = [name for name, _ in self.outputs]
        self.delay = float(_param(config, "delay_ms", "0")) / 1000.0
        self.extra_classes = int(_param(config, "extra_classes", "0"))

    def _feeds(self, request):
        feeds = {}
        for name, _ in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"request has no input {name!r}")
            array = tensor.as_numpy()
            dtype = self.feed_types[name]
            feeds[name] = array if dtype is None or array.dtype == dtype else array.astype(dtype)
        return feeds

    def _respond(self, results):
        if self.extra_classes > 0:
            results = [np.concatenate([r, np.full((r.shape[0], self.extra_classes), -30.0, dtype=r.dtype)], axis=1)
                       for r in results]
        tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value, dtype=dtype))
                   for (name, dtype), value in zip(self.outputs, results)]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    @staticmethod
    def _error(exc, code=None):
        message = f"{type(exc).__name__}: {exc}"
        if code is None:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))

    def _run_one(self, feeds):
        try:
            return self._respond(self.session.run(self.output_names, feeds))
        except Exception as exc:  # noqa: BLE001 - reported to the client, not raised
            # ONNX Runtime says InvalidArgument for inputs the graph rejects (e.g. a dim the
            # config leaves free but the graph fixes): the client's fault, HTTP 400.
            bad_input = type(exc).__name__ in ("InvalidArgument", "ValueError", "TypeError")
            return self._error(exc, pb_utils.TritonError.INVALID_ARG if bad_input else None)

    def execute(self, requests):
        if self.delay > 0:
            time.sleep(self.delay)
        responses = [None] * len(requests)
        batch = []  # (index, feeds, rows)
        for index, request in enumerate(requests):
            try:
                feeds = self._feeds(request)
            except Exception as exc:  # noqa: BLE001
                responses[index] = self._error(exc, pb_utils.TritonError.INVALID_ARG)
                continue
            rows = next(iter(feeds.values())).shape[0] if self.batching and feeds else None
            batch.append((index, feeds, rows))

        if len(batch) == 1 or not self.batching:
            for index, feeds, _ in batch:
                responses[index] = self._run_one(feeds)
            return responses

        try:
            joined = {name: np.concatenate([feeds[name] for _, feeds, _ in batch], axis=0)
                      for name, _ in self.inputs}
            results = self.session.run(self.output_names, joined)
            bounds = np.cumsum([rows for _, _, rows in batch])[:-1]
            parts = [np.split(result, bounds, axis=0) for result in results]
            for k, (index, _, _) in enumerate(batch):
                responses[index] = self._respond([part[k] for part in parts])
        except Exception:  # noqa: BLE001 - one bad request must not fail the others
            for index, feeds, _ in batch:
                responses[index] = self._run_one(feeds)
        return responses

    def finalize(self):
        self.session = None
