"""get_config/from_config of every layer and Sequential; model.save / nn.models.load_model."""
import os
import zipfile

import numpy as np
import pytest

from fastbn import nn

LAYERS = [
    lambda: nn.Dense(3, activation="gelu", kernel_initializer=nn.initializers.Constant(4.0),
                     kernel_regularizer=nn.regularizers.L2(1e-3), bias_constraint="non_neg",
                     activity_regularizer="l1", input_dim=5, name="d"),
    lambda: nn.BatchNormalization(axis=[1, 2], momentum=0.9, epsilon=1e-5, center=False,
                                  gamma_initializer="he_uniform", beta_regularizer="l1_l2",
                                  gamma_constraint=nn.constraints.MaxNorm(3.0), trainable=False),
    lambda: nn.Activation("softplus"),
    lambda: nn.LeakyReLU(0.2),
    lambda: nn.Flatten(input_shape=(2, 3)),
    lambda: nn.Dropout(0.25, seed=3),
    lambda: nn.Conv2D(4, (3, 2), strides=2, padding="same", data_format="channels_first",
                      kernel_initializer=nn.initializers.VarianceScaling(2.0, "fan_out")),
    lambda: nn.MaxPooling2D((3, 3), strides=1, padding="same"),
    lambda: nn.AveragePooling2D(),
    lambda: nn.GlobalAveragePooling2D(keepdims=True),
]


@pytest.mark.parametrize("make", LAYERS)
def test_layer_config_round_trip(make):
    import json
    layer = make()
    config = layer.get_config()
    json.dumps(config)                                  # JSON-ready
    back = type(layer).from_config(config)
    assert back.get_config() == config
    assert back.name == layer.name and back.trainable == layer.trainable


def test_config_of_a_plain_function_is_refused():
    layer = nn.Dense(2, kernel_initializer=lambda shape, dtype: np.zeros(shape, dtype))
    with pytest.raises(TypeError, match="kernel_initializer"):
        layer.get_config()


def _model(compiled=True, dropout=0.1):
    """(A Dropout layer's generator state is not saved: a loaded model draws anew.)"""
    nn.set_random_seed(0)
    model = nn.Sequential([nn.Input((6,)),
                           nn.Dense(8, activation="selu", kernel_initializer="lecun_normal",
                                    kernel_regularizer="l2"),
                           nn.BatchNormalization(gamma_constraint="non_neg"),
                           nn.Dropout(dropout, seed=0),
                           nn.Dense(3, activation="softmax")])
    if compiled:
        model.compile(optimizer=nn.RMSprop(0.01, momentum=0.5), loss="categorical_crossentropy",
                      metrics=["accuracy"])
    return model


def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    return x, np.eye(3)[rng.integers(0, 3, n)].astype(np.float32)


def test_sequential_config_round_trip():
    model = _model()
    config = model.get_config()
    back = nn.Sequential.from_config(config)
    assert back.get_config() == config
    assert back.count_params() == model.count_params()


def test_save_and_load_model_continue_training_identically(tmp_path):
    x, y = _data()
    model = _model(dropout=0.0)
    model.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    assert zipfile.ZipFile(path).namelist() == ["config.json", "model.weights.npz",
                                                 "optimizer.npz"]
    back = nn.models.load_model(path)
    assert back.get_config() == model.get_config()
    assert type(back.optimizer) is nn.RMSprop and back.optimizer.get_config() == \
        model.optimizer.get_config()
    assert back.optimizer.iterations == model.optimizer.iterations == 8
    assert back.metrics_names == model.metrics_names
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.predict(x, verbose=0), model.predict(x, verbose=0))
    # one more step from the restored optimizer state: the same bits as the original's
    model.train_on_batch(x[:16], y[:16])
    back.train_on_batch(x[:16], y[:16])
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    uncompiled = nn.models.load_model(path, compile=False)
    assert not uncompiled.compiled


def test_save_is_atomic_and_checks_names(tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / "model.keras"
    model.save(path)
    before = path.read_bytes()
    real = zipfile.ZipFile.writestr
    calls = []

    def failing(self, name, data, *args, **kwargs):
        calls.append(name)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(self, name, data, *args, **kwargs)
    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.keras"]
    with pytest.raises(ValueError, match=".keras"):
        model.save(tmp_path / "model.h5")
    junk = tmp_path / "junk.keras"
    with zipfile.ZipFile(junk, "w") as z:
        z.writestr("other.txt", "x")
    with pytest.raises(ValueError, match="not a fastbn .keras file"):
        nn.models.load_model(junk)


def test_custom_layers_need_custom_objects(tmp_path):
    class Scale(nn.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x, training=False):
            return x * self.factor
    model = nn.Sequential([nn.Input((2,)), Scale(3.0)])
    path = tmp_path / "custom.keras"
    model.save(path)
    with pytest.raises(ValueError, match="custom_objects"):
        nn.models.load_model(path)
    back = nn.models.load_model(path, custom_objects={"Scale": Scale})
    np.testing.assert_array_equal(back.predict(np.ones((1, 2)), verbose=0), [[3.0, 3.0]])


def test_model_checkpoint_saves_whole_models(tmp_path):
    x, y = _data()
    model = _model()
    ckpt = nn.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch}.keras"), monitor="loss")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ckpt])
    assert sorted(os.listdir(tmp_path)) == ["m-1.keras", "m-2.keras"]
    back = nn.models.load_model(tmp_path / "m-2.keras")
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
