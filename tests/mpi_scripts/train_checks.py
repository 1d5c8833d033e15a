"""Data-parallel training steps, run by ``tests/test_distributed.py``.

``mpiexec -n P python train_checks.py OUT`` trains :func:`build` with
:class:`fastbn.distributed.DataParallel` and writes each rank's weights and
history to ``OUT/train<rank>.npz``; ``python train_checks.py OUT --single``
trains the same model in one process (``OUT/single.npz``).
"""
import sys

import numpy as np

#: 46 samples at batch 16: steps of 16, 16 and 14 rows; with 3 ranks the last
#: step of each epoch is split 5/5/4. ``train_on_batch`` on 2 rows leaves a
#: rank of 3 empty.
N, BATCH, EPOCHS = 46, 16, 2


def data():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((N, 6)) * 2 + 5).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 10).astype(int) + (x[:, 2] > 5)
    return x, y


def build(synchronized, optimizer="sgd"):
    from fastbn import nn
    nn.clear_session()
    nn.set_random_seed(11)
    model = nn.Sequential([nn.Dense(12, activation="elu", input_shape=(6,)),
                           nn.BatchNormalization(synchronized=synchronized, momentum=0.9),
                           nn.Dense(8, use_bias=False),
                           nn.BatchNormalization(synchronized=synchronized, momentum=0.9),
                           nn.Activation("relu"),
                           nn.Dense(3, activation="softmax")])
    opt = nn.SGD(learning_rate=0.1, momentum=0.9) if optimizer == "sgd" else nn.Adam(0.01)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=opt,
                  metrics=["accuracy"])
    return model


def train(model):
    x, y = data()
    h = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0)
    extra = model.train_on_batch(x[:2], y[:2])
    val = model.evaluate(x[:13], y[:13], batch_size=4, verbose=0)
    out = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    out["loss"] = np.array(h.history["loss"])
    out["accuracy"] = np.array(h.history["accuracy"])
    out["extra"] = np.array(extra)
    out["evaluate"] = np.array(val)
    return out


def main(out, single=False):
    if single:
        np.savez(f"{out}/single.npz", **train(build(False)))
        return
    from fastbn import distributed
    dp = distributed.DataParallel()
    model = build(True)
    if dp.rank != 0:            # different initial weights: distribute must fix them
        model.set_weights([w + 1 for w in model.get_weights()])
    dp.distribute(model)
    np.savez(f"{out}/train{dp.rank}.npz", **train(model))


if __name__ == "__main__":
    main(sys.argv[1], "--single" in sys.argv)
