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
        from fastbn.examples import train_speed
        if impl == "fastbn":
            self.model = train_speed.fastbn_model()
            self.step = lambda: self.model.train_on_batch(self.x, self.y)
        else:
            if torch is None:
                raise NotImplementedError("PyTorch is not installed")
            model, opt, loss_fn = train_speed.torch_model()
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
