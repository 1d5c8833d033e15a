"""Keras-style callbacks for :meth:`fastbn.nn.Sequential.fit`.

A callback is any object with some of the methods of :class:`Callback`;
``fit`` calls those it has, with Keras' arguments, at these points:
``on_train_begin``, ``on_epoch_begin``, ``on_test_begin`` (before the
validation pass of an epoch), ``on_epoch_end`` (with the epoch's logs,
validation included) and ``on_train_end``.
"""

__all__ = ["Callback", "LearningRateScheduler"]


class Callback:
    """Base class: every hook does nothing; ``self.model`` is set by ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> class Count(nn.callbacks.Callback):
    ...     epochs = 0
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         self.epochs += 1
    >>> model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    >>> model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    >>> c = Count()
    >>> _ = model.fit(np.ones((4, 3)), [0, 1, 0, 1], epochs=3, verbose=0, callbacks=[c])
    >>> c.epochs
    3
    """

    model = None

    def set_model(self, model):
        """Called by ``fit`` before training with the model being trained.

        Parameters
        ----------
        model : Sequential
        """
        self.model = model

    def on_train_begin(self, logs=None):
        """Before the first epoch.

        Parameters
        ----------
        logs : dict, optional
            Keras' ``logs`` argument.
        """

    def on_epoch_begin(self, epoch, logs=None):
        """Before epoch ``epoch`` (counted from 0).

        Parameters
        ----------
        epoch : int
        logs : dict, optional
            Keras' ``logs`` argument.
        """

    def on_test_begin(self, logs=None):
        """Before the validation pass at the end of an epoch.

        Parameters
        ----------
        logs : dict, optional
            Keras' ``logs`` argument.
        """

    def on_epoch_end(self, epoch, logs=None):
        """After epoch ``epoch``; ``logs`` holds its loss, metrics and validation results.

        Parameters
        ----------
        epoch : int
            Counted from 0.
        logs : dict, optional
            ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` as they apply.
        """

    def on_train_end(self, logs=None):
        """After the last epoch.

        Parameters
        ----------
        logs : dict, optional
            Keras' ``logs`` argument.
        """


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate before each epoch, as Keras' callback does.

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch, lr) -> new lr``, epoch counted from 0.
    verbose : int, default 0
        1 prints the new rate at each epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> model = nn.Sequential([nn.Dense(2, activation="softmax", input_shape=(3,))])
    >>> model.compile(loss="sparse_categorical_crossentropy", optimizer=nn.SGD(1.0))
    >>> halve = nn.callbacks.LearningRateScheduler(lambda epoch, lr: lr / 2)
    >>> _ = model.fit(np.ones((4, 3)), [0, 1, 0, 1], epochs=3, verbose=0, callbacks=[halve])
    >>> model.optimizer.learning_rate
    0.125
    """

    def __init__(self, schedule, verbose=0):
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be callable "
                            f"(epoch, lr) -> lr, got {schedule!r}")
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        lr = float(self.schedule(epoch, opt.learning_rate))
        opt.learning_rate = lr
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr:.6g}.")
