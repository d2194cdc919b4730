"""The seed's U-Net: its parameter count is a contract; training steps, export parity."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs the train extra (TensorFlow)")
pytestmark = pytest.mark.tensorflow


def test_parameter_count_matches_the_seed():
    from training.model import build_unet

    model = build_unet()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert model.count_params() == 2_164_627
    assert trainable == 2_161_683
    assert model.output_shape == (None, 256, 256, 3)


def test_two_training_epochs_on_real_images_and_resume(pets, tmp_path):
    from training import train

    args = [
        "--data",
        str(pets),
        "--out",
        str(tmp_path / "run"),
        "--image-size",
        "64",
        "--batch-size",
        "4",
        "--limit",
        "8",
        "--val-count",
        "4",
        "--epochs",
        "1",
    ]
    assert train.main(args) == 0
    assert (tmp_path / "run" / "last.keras").exists() and train.completed_epochs(tmp_path / "run" / "log.csv") == 1
    # --resume continues at the next epoch instead of starting over
    args[-1] = "2"
    assert train.main([*args, "--resume"]) == 0
    assert train.completed_epochs(tmp_path / "run" / "log.csv") == 2


def test_missing_data_is_a_clear_error(tmp_path):
    from training.data import DatasetMissingError, read_split

    with pytest.raises(DatasetMissingError, match="Oxford-IIIT Pet not found"):
        read_split(tmp_path, "trainval")


def test_augmented_batches_are_valid(pets):
    from training.data import make_dataset, read_split

    names = read_split(pets, "trainval")[:8]
    images, labels = next(iter(make_dataset(pets, names, 96, 4, training=True, seed=1)))
    assert images.shape == (4, 96, 96, 3) and labels.shape == (4, 96, 96, 1)
    assert 0.0 <= float(images.numpy().min()) and float(images.numpy().max()) <= 1.0
    assert set(np.unique(labels.numpy())) <= {0, 1, 2}


def test_export_parity_with_keras(tmp_path):
    import keras

    from training.export import PARITY_TOLERANCE, export
    from training.model import build_unet

    model = build_unet()
    # non-trivial batch-norm statistics, so that folding BN into the convolutions is exercised
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            mean, var = layer.moving_mean, layer.moving_variance
            mean.assign(np.random.default_rng(0).normal(0, 0.1, mean.shape).astype("float32"))
            var.assign(np.random.default_rng(1).uniform(0.5, 1.5, var.shape).astype("float32"))
    weights = tmp_path / "w.keras"
    model.save(weights)
    info = export(weights, tmp_path / "unet.onnx", data=tmp_path / "no-data")
    assert info["max_abs_diff_vs_keras"] < PARITY_TOLERANCE
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "unet.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "image" and inp.shape[1:] == [256, 256, 3] and not isinstance(inp.shape[0], int)
    out = session.run(None, {"image": np.zeros((3, 256, 256, 3), np.float32)})[0]
    assert out.shape == (3, 256, 256, 3) and np.allclose(out.sum(-1), 1, atol=1e-5)


def test_tensorflow_runtime_agrees_with_onnx(tmp_path):
    """MASKQ_RUNTIME=tensorflow serves the same network as the ONNX default."""
    from maskq.segmentation import load_segmenter
    from maskq.settings import load_settings
    from training.export import export
    from training.model import build_unet

    weights = tmp_path / "w.keras"
    build_unet().save(weights)
    export(weights, tmp_path / "unet.onnx", data=tmp_path / "no-data", savedmodel=tmp_path / "unet_savedmodel")
    batch = np.random.default_rng(0).random((2, 256, 256, 3), dtype=np.float32)
    tf_rt = load_segmenter(load_settings(models_dir=tmp_path, runtime="tensorflow", model="pets"))
    onnx_rt = load_segmenter(load_settings(models_dir=tmp_path, model="pets"))
    assert tf_rt.runtime == "tensorflow" and onnx_rt.runtime == "onnxruntime"
    assert np.abs(tf_rt.predict(batch) - onnx_rt.predict(batch)).max() < 1e-4


def test_shipped_onnx_weights_come_back_into_keras(pets, tmp_path):
    """training.from_onnx: the shipped file is the seed's architecture, and its weights return into
    Keras with the same output (what a fine-tune or a SavedModel export starts from)."""
    from maskq import defaults
    from training import from_onnx

    out = tmp_path / "recovered.keras"
    assert from_onnx.main(["--model", str(defaults.MODELS_DIR / "unet.onnx"), "--out", str(out),
                           "--data", str(pets)]) == 0
    import keras

    model = keras.models.load_model(out, compile=False)
    assert model.count_params() == 2_164_627


def test_frozen_batch_norm_keeps_its_statistics_through_a_training_step(pets, tmp_path):
    import keras

    from training import train
    from training.model import build_unet

    init = tmp_path / "init.keras"
    build_unet(64).save(init)
    out = tmp_path / "run"
    assert train.main(["--data", str(pets), "--out", str(out), "--image-size", "64", "--batch-size", "4",
                       "--limit", "4", "--val-count", "2", "--epochs", "1", "--init-from", str(init),
                       "--freeze-bn"]) == 0
    before = keras.models.load_model(init, compile=False).get_layer("enc0_bn1").get_weights()
    after = keras.models.load_model(out / "last.keras", compile=False).get_layer("enc0_bn1").get_weights()
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
