"""A rank that raises mid-training, run by ``tests/test_distributed.py``.

``mpiexec -n 2 python abort_checks.py``: rank 1's optimizer raises on the
second step while rank 0 goes on to its next collective. The uncaught
exception must abort the whole job (non-zero exit, traceback printed), not
leave rank 0 waiting.
"""
import numpy as np


class Boom(RuntimeError):
    pass


def main():
    from fastbn import distributed, nn
    dp = distributed.DataParallel()
    nn.set_random_seed(0)
    model = dp.distribute(nn.Sequential([
        nn.Dense(4, input_shape=(3,)), nn.BatchNormalization(synchronized=True),
        nn.Dense(2, activation="softmax")]))
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    if dp.rank == 1:
        apply, calls = model.optimizer.apply, []

        def failing_apply(grads, variables):
            calls.append(1)
            if len(calls) == 2:
                raise Boom(f"boom on rank {dp.rank} at step 2")
            apply(grads, variables)
        model.optimizer.apply = failing_apply
    x = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    model.fit(x, (x[:, 0] > 0).astype(int), batch_size=8, epochs=3, verbose=0)
    print(f"rank {dp.rank} finished: the job was not aborted", flush=True)


if __name__ == "__main__":
    main()
