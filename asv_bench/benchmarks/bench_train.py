"""One training step of the MNIST MLP (the main job's bn-before model), fastbn beside PyTorch.

A step is forward, loss, backward and an SGD update on one batch; the model is
built, compiled and run for a few steps in ``setup`` so that neither
compilation nor first-touch allocation lands in ``time_step``.
"""
import numpy as np

try:
    import torch
except ImportError:                    # pragma: no cover
    torch = None

BATCHES = [32, 128]


class TrainStep:
    params = [BATCHES, ["fastbn", "torch"]]
    param_names = ["batch_size", "impl"]
    timeout = 120

    def setup(self, batch_size, impl):
        rng = np.random.default_rng(0)
        self.x = rng.random((batch_size, 28, 28), dtype=np.float32)
        self.y = rng.integers(0, 10, batch_size)
        if impl == "fastbn":
            from fastbn import nn
            from fastbn.examples.mnist import build_model
            nn.set_random_seed(0)
            self.model = build_model("bn-before")
            self.model.compile(loss="sparse_categorical_crossentropy",
                               optimizer=nn.SGD(0.01), metrics=["accuracy"])
            self.step = lambda: self.model.train_on_batch(self.x, self.y)
        else:
            if torch is None:
                raise NotImplementedError("PyTorch is not installed")
            from torch import nn as tnn
            torch.manual_seed(0)
            bn = lambda n: tnn.BatchNorm1d(n, eps=1e-3, momentum=0.01)  # noqa: E731
            model = tnn.Sequential(tnn.Flatten(), bn(784), tnn.Linear(784, 300, bias=False),
                                   bn(300), tnn.ELU(), tnn.Linear(300, 100, bias=False),
                                   bn(100), tnn.ELU(), tnn.Linear(100, 10))
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            loss_fn = tnn.CrossEntropyLoss()
            xt, yt = torch.from_numpy(self.x), torch.from_numpy(self.y)

            def step():
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xt), yt)
                loss.backward()
                opt.step()
                return loss.item()
            self.step = step
        for _ in range(5):
            self.step()

    def time_step(self, batch_size, impl):
        self.step()

    def peakmem_step(self, batch_size, impl):
        self.step()
