"""The segmentation models by name: files, input size, normalisation, output contract and card.

The one place that knows what a model file is. Pure data and numpy (no ONNX Runtime, no OpenCV), so
the API lists and validates model names without loading one; ``maskq.segmentation`` runs them.

Both models take float32 NHWC RGB in [0, 1], squashed to ``input_size`` squared; a model that wants
another normalisation carries it in its graph (the general model's first layer applies ImageNet's
mean and std), so every caller feeds the same thing. What comes out differs, and
``ModelSpec.foreground`` turns it into one foreground probability map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

OutputKind = Literal["trimap3", "alpha1"]
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    files: dict[str, str]  # precision -> file name in the models folder
    input_size: int
    output: OutputKind
    card: str  # the model card, relative to the models folder
    normalisation: str = "RGB in [0, 1]"
    savedmodel: str | None = None  # MASKQ_RUNTIME=tensorflow loads this folder
    trained_on: tuple[str, ...] = field(default_factory=tuple)

    def foreground(self, raw: np.ndarray) -> np.ndarray:
        """The network's output (N, S, S, C) -> (N, S, S) float32 foreground probability."""
        if self.output == "trimap3":
            # channels (foreground, background, border); the trimap counts the border as object
            return (1.0 - raw[..., 1]).astype(np.float32, copy=False)
        return raw[..., 0].astype(np.float32, copy=False)

    def hard_foreground(self, raw: np.ndarray) -> np.ndarray:
        """One output (S, S, C) as a boolean mask at the network's size, the way the model was
        trained to be read: a trimap's argmax is not background; an alpha is above 0.5."""
        if self.output == "trimap3":
            return raw.argmax(-1) != 1
        return raw[..., 0] > 0.5

    def public(self) -> dict:
        """What ``GET /v1/models`` shows."""
        return {
            "name": self.name,
            "description": self.description,
            "input_size": self.input_size,
            "precisions": sorted(self.files),
            "normalisation": self.normalisation,
            "output": self.output,
            "trained_on": list(self.trained_on),
            "card": f"models/{self.card}",
        }


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="general",
            description="Any object: products, people, animals, vehicles. U-Net on a MobileNetV2 encoder "
            "(ImageNet-pretrained), trained on DUTS-TR and Oxford-IIIT Pet.",
            files={"fp32": "general.onnx", "int8": "general-int8.onnx"},
            # chosen on the training hold-out (training/pick_size.py): best mean of Dice and boundary F
            input_size=288,
            output="alpha1",
            card="GENERAL_MODEL_CARD.md",
            normalisation="RGB in [0, 1]; ImageNet mean/std applied inside the graph",
            trained_on=("DUTS-TR", "Oxford-IIIT Pet trainval"),
        ),
        ModelSpec(
            name="pets",
            description="Cats and dogs only: the seed U-Net (2,164,627 parameters) trained on Oxford-IIIT Pet; "
            "predicts a 3-class trimap (pet, background, border).",
            files={"fp32": "unet.onnx", "int8": "unet-int8.onnx"},
            input_size=256,
            output="trimap3",
            card="MODEL_CARD.md",
            savedmodel="unet_savedmodel",
            trained_on=("Oxford-IIIT Pet trainval",),
        ),
    )
}
ModelName = Literal["general", "pets"]  # the keys of MODELS, for pydantic and the OpenAPI schema
# Photos in general, not only pets: the general model is what a new user expects of a cut-out.
DEFAULT_MODEL: ModelName = "general"
assert set(MODELS) == set(ModelName.__args__)  # noqa: S101 - the Literal must list the registry


def get_model(name: str) -> ModelSpec:
    """The spec by name; an unknown name is the caller's ``invalid_parameter``."""
    from maskq.errors import InvalidParameterError

    try:
        return MODELS[name]
    except KeyError:
        raise InvalidParameterError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}",
                                    field="model") from None


def spec_for_file(path) -> ModelSpec:
    """The spec of a shipped file by its name (tools that are handed a path: evaluate, bench)."""
    from pathlib import Path

    from maskq.errors import ModelUnavailableError

    name = Path(path).name
    for spec in MODELS.values():
        if name in spec.files.values():
            return spec
    raise ModelUnavailableError(f"{name} is no file of a known model ({', '.join(MODELS)})")
