"""A training run killed (SIGKILL) in the middle of writing a checkpoint: the
previous checkpoint still loads, with the weights it held.

The child trains a tiny model and saves its weights after every epoch, as
Keras' ``ModelCheckpoint`` does. Its second save is made to stop half-way
through the archive (``numpy.savez`` writes the first half of its bytes, tells
the parent, and sleeps); the parent then kills it, so the kill lands inside
the save every time, with no timing guesswork.
"""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastbn
from fastbn import nn

CHILD = textwrap.dedent('''
    import io, os, sys, time
    import numpy as np
    from fastbn import nn

    ckpt, ref = sys.argv[1], sys.argv[2]
    real_savez = np.savez
    saves = []

    def savez(file, **arrays):                 # the second save stalls half-way
        saves.append(1)
        if len(saves) < 2:
            return real_savez(file, **arrays)
        buf = io.BytesIO()
        real_savez(buf, **arrays)
        data = buf.getvalue()
        file.write(data[:len(data) // 2])
        file.flush()
        os.fsync(file.fileno())
        print("inside save", flush=True)
        time.sleep(600)                        # until the parent kills us

    np.savez = savez

    class Checkpoint(nn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.save_weights(ckpt)
            if epoch == 0:                     # what the first checkpoint must hold
                real_savez(ref, **{v.name: v.value for v in self.model.variables})
                print("saved epoch 1", flush=True)

    nn.set_random_seed(0)
    model = nn.Sequential([nn.Dense(16, input_shape=(8,)), nn.BatchNormalization(),
                           nn.Dense(3, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 8), dtype=np.float32), rng.integers(0, 3, 64)
    model.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[Checkpoint()])
    print("finished", flush=True)
''')


def _model():
    return nn.Sequential([nn.Dense(16, input_shape=(8,)), nn.BatchNormalization(),
                          nn.Dense(3, activation="softmax")])


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
def test_killed_during_a_checkpoint_save_the_previous_one_loads(tmp_path):
    ckpt, ref = tmp_path / "ckpt.weights.npz", tmp_path / "epoch1.npz"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(fastbn.__file__).parent.parent)]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, str(script), str(ckpt), str(ref)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env)
    try:
        lines = []
        for line in child.stdout:              # blocks until the child speaks or exits
            lines.append(line.strip())
            if line.strip() == "inside save":
                break
        assert lines == ["saved epoch 1", "inside save"], (lines, child.stderr.read())
        child.kill()                           # SIGKILL: no cleanup runs in the child
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        child.stderr.close()

    model = _model()
    model.load_weights(ckpt)                   # in place of the old file: BadZipFile
    with np.load(ref) as saved:
        for v, name in zip(model.variables, saved.files):
            np.testing.assert_array_equal(v.value, saved[name])
    # the interrupted save left only its hidden temporary beside the checkpoint
    left = {p.name for p in tmp_path.iterdir()} - {ckpt.name, ref.name, script.name}
    assert len(left) == 1 and all(p.startswith(f".{ckpt.name}.") and p.endswith(".part")
                                  for p in left), left
