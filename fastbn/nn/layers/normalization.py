"""Keras' normalization layer: BatchNormalization, on fastbn's kernels."""
import numpy as np

from ... import autograd as ag
from ... import _bn, functional as F
from .. import constraints, initializers, regularizers
from .._format import format_shape
from ._utils import FLOATX
from .base import Layer

__all__ = ["BatchNormalization"]


class BatchNormalization(Layer):
    r"""Batch normalization, Keras' layer, on fastbn's kernels.

    In training (``fit``, or ``training=True``) each feature is normalised
    with the batch mean and (biased) variance, and the moving statistics are
    updated in place, ``moving = moving * momentum + batch * (1 - momentum)``;
    in inference (``evaluate``, ``predict``, ``training=False``) the moving
    statistics are used. With ``trainable=False`` the layer always runs in
    inference mode (Keras 3).

    Called as ``layer(x, training=True, mask=m)`` (``m``: one boolean per
    sample position, shaped like ``x`` without the feature axes; a
    :class:`Masking` layer in a :class:`~fastbn.nn.Sequential` provides it),
    the batch statistics and the moving statistics' update come from the
    unmasked positions only; a fully masked batch gives zeros; in inference
    the mask changes nothing (Keras). As in Keras 3, a mask with one axis
    less than ``x`` that is not of that shape gets a trailing axis and is
    broadcast to ``x``: a ``(batch, time)`` mask with ``axis=1`` keeps, for
    step ``t``, the batches ``m[:, t]`` selects.

    Parameters
    ----------
    axis : int or list/tuple of int, default -1
        The feature axis or axes (kept; statistics are taken over the rest).
    momentum : float, default 0.99
        Weight of the old moving statistics in each update (Keras' convention;
        PyTorch's ``momentum=0.1`` is Keras' 0.9).
    epsilon : float, default 1e-3
        Added to the variance before its square root, to keep the division
        finite (Keras' default; PyTorch's is 1e-5).
    center, scale : bool, default True
        Learn ``beta`` / ``gamma``.
    beta_initializer : str or callable, default "zeros"
    gamma_initializer : str or callable, default "ones"
    moving_mean_initializer : str or callable, default "zeros"
    moving_variance_initializer : str or callable, default "ones"
    beta_regularizer, gamma_regularizer : str or callable, optional
        Penalties on ``beta`` / ``gamma`` added to the training loss
        (:mod:`fastbn.nn.regularizers`).
    beta_constraint, gamma_constraint : str or callable, optional
        Projections of ``beta`` / ``gamma`` after each optimizer step
        (:mod:`fastbn.nn.constraints`).
    renorm : bool, default False
        Batch renormalization (Ioffe, 2017), as Keras 3 does it: in training
        the normalized batch is corrected by :math:`r = \sigma_B / \sigma_R`
        and :math:`d = (\mu_B - \mu_R) / \sigma_R` (clipped, held constant
        in the backward pass), :math:`\hat x r + d`, where :math:`\mu_R,
        \sigma_R` are the moving ``renorm_mean`` / ``renorm_stddev``
        (``max(renorm_stddev, sqrt(epsilon))``) and :math:`\sigma_B =
        \sqrt{\mathrm{var}_B + \epsilon}`. Extra non-trainable variables:
        ``moving_stddev``, ``renorm_mean``, ``renorm_stddev`` (the stddevs start
        at the square root of the moving variance's initial value);
        ``moving_variance`` becomes ``max(moving_stddev^2 - epsilon, 0)``.
        Inference is the plain layer's.
    renorm_clipping : dict, optional
        Keys ``"rmax"``, ``"rmin"``, ``"dmax"`` (each optional): ``r`` is
        clipped to ``[rmin, rmax]``, ``d`` to ``[-dmax, dmax]``. Another key,
        ``rmax < rmin`` or a negative ``dmax`` is a ``ValueError``.
    renorm_momentum : float, default 0.99
        Momentum of ``renorm_mean`` / ``renorm_stddev``.
    synchronized : bool, default False
        In data-parallel training (:class:`fastbn.distributed.DataParallel`),
        normalise with the statistics of the global batch, over every process
        (Keras' name; PyTorch's ``SyncBatchNorm``). Outside it, in a single
        process, the layer is the plain one. ``comm``, set by
        ``DataParallel.distribute``, is the communicator used (None: none).

    **kwargs
        ``name``, ``input_shape``, ``input_dim``, ``trainable``, ``dtype``: see
        :class:`Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import nn
    >>> nn.clear_session()
    >>> bn = nn.BatchNormalization(epsilon=0.0)
    >>> bn(np.array([[1.0], [3.0]]), training=True)
    Tensor([[-1.],
            [ 1.]], dtype=float32, requires_grad=True)
    >>> [(v.name, v.trainable) for v in bn.variables]        # doctest: +NORMALIZE_WHITESPACE
    [('batch_normalization/gamma', True), ('batch_normalization/beta', True),
     ('batch_normalization/moving_mean', False), ('batch_normalization/moving_variance', False)]
    >>> bn.moving_mean.numpy()                     # 0.99 * 0 + 0.01 * 2
    array([0.02], dtype=float32)
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, renorm=False, renorm_clipping=None,
                 renorm_momentum=0.99, synchronized=False, **kwargs):
        super().__init__(**kwargs)
        self.synchronized, self.comm = bool(synchronized), None
        self.renorm = bool(renorm)
        if self.renorm:                       # Keras' checks, in Keras' order
            renorm_clipping = dict(renorm_clipping or {})
            keys = ["rmax", "rmin", "dmax"]
            if set(renorm_clipping) - set(keys):
                raise ValueError(f"BatchNormalization: invalid keys for renorm_clipping: "
                                 f"{renorm_clipping}; supported: {keys}")
            rmax, rmin = renorm_clipping.get("rmax"), renorm_clipping.get("rmin")
            dmax = renorm_clipping.get("dmax")
            if rmax is not None and rmin is not None and rmax < rmin:
                raise ValueError(f"BatchNormalization: rmax should be greater than rmin in "
                                 f"renorm_clipping; got rmax={rmax}, rmin={rmin}")
            if dmax is not None and dmax < 0:
                raise ValueError(f"BatchNormalization: dmax should be non-negative in "
                                 f"renorm_clipping; got dmax={dmax}")
        self.renorm_clipping = renorm_clipping
        self.renorm_momentum = _bn.check_momentum(renorm_momentum, "BatchNormalization")
        self.moving_stddev = self.renorm_mean = self.renorm_stddev = None
        if isinstance(axis, (list, tuple)):
            if not axis or not all(isinstance(a, (int, np.integer)) for a in axis):
                raise TypeError(f"BatchNormalization: axis must be an int or a non-empty "
                                f"list/tuple of ints, got {axis!r}")
            self.axis = [int(a) for a in axis]
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            self.axis = int(axis)
        else:
            raise TypeError(f"BatchNormalization: axis must be an int or a list/tuple of "
                            f"ints, got {axis!r}")
        self.momentum = _bn.check_momentum(momentum, "BatchNormalization")
        self.epsilon = _bn.check_epsilon(epsilon, "BatchNormalization")
        self.center, self.scale = bool(center), bool(scale)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None
        self._axes = None

    def build(self, input_shape):
        ndim = len(input_shape)
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        norm = []
        for a in axes:
            if not -ndim <= a < ndim:
                raise ValueError(f"BatchNormalization {self.name!r}: axis {a} is out of range "
                                 f"for inputs of shape {format_shape(input_shape)}")
            norm.append(a % ndim)
        if 0 in norm:
            raise ValueError(f"BatchNormalization {self.name!r}: axis {self.axis!r} includes "
                             f"the batch axis 0; name the feature axes, e.g. axis=-1")
        if len(set(norm)) != len(norm):
            raise ValueError(f"BatchNormalization {self.name!r}: axis {self.axis!r} repeats "
                             f"an axis")
        norm = sorted(norm)
        shape = tuple(input_shape[a] for a in norm)
        if any(s is None for s in shape):
            raise ValueError(f"BatchNormalization {self.name!r}: the feature axes of "
                             f"{format_shape(input_shape)} must have known sizes")
        self._axes = norm[0] if len(norm) == 1 else tuple(norm)
        if self.scale:
            self.gamma = self.add_weight("gamma", shape, self.gamma_initializer,
                                         regularizer=self.gamma_regularizer,
                                         constraint=self.gamma_constraint)
        if self.center:
            self.beta = self.add_weight("beta", shape, self.beta_initializer,
                                        regularizer=self.beta_regularizer,
                                        constraint=self.beta_constraint)
        self.moving_mean = self.add_weight("moving_mean", shape, self.moving_mean_initializer,
                                           trainable=False)
        self.moving_variance = self.add_weight("moving_variance", shape,
                                               self.moving_variance_initializer, trainable=False)
        if self.renorm:
            # Keras: the moving and renorm stddevs start at sqrt(moving variance initializer)
            def stddev_init(shape, dtype=FLOATX):
                return np.sqrt(self.moving_variance_initializer(shape, dtype))
            self.moving_stddev = self.add_weight("moving_stddev", shape, stddev_init,
                                                 trainable=False)
            self.renorm_mean = self.add_weight("renorm_mean", shape,
                                               self.moving_mean_initializer, trainable=False)
            self.renorm_stddev = self.add_weight("renorm_stddev", shape, stddev_init,
                                                 trainable=False)

    def _check_input(self, shape):
        want = self.input_shape
        if len(shape) != len(want) or any(shape[a] != want[a] for a in
                                          ((self._axes,) if isinstance(self._axes, int)
                                           else self._axes)):
            raise ValueError(f"BatchNormalization {self.name!r} was built for inputs of "
                             f"shape {format_shape(want)} (features on axis {self.axis}), got "
                             f"{format_shape(shape)}")

    supports_masking = True

    def call(self, x, training=False, mask=None):
        training = bool(training) and self.trainable
        if mask is not None and training:
            if self.renorm:
                raise NotImplementedError("BatchNormalization: renorm=True with a mask is "
                                          "not implemented")
            return ag.ops.normalization.BatchNorm.apply(
                x, None if self.gamma is None else self.gamma.tensor,
                None if self.beta is None else self.beta.tensor,
                axis=self._axes, epsilon=self.epsilon, training=True,
                moving_mean=self.moving_mean.value, moving_variance=self.moving_variance.value,
                momentum=self.momentum, mask=np.asarray(mask))
        if training and self.renorm:
            return self._call_renorm(x)
        return ag.ops.normalization.BatchNorm.apply(
            x, None if self.gamma is None else self.gamma.tensor,
            None if self.beta is None else self.beta.tensor,
            axis=self._axes, epsilon=self.epsilon, training=training,
            moving_mean=self.moving_mean.value, moving_variance=self.moving_variance.value,
            momentum=self.momentum, comm=self.comm if self.synchronized else None)

    def _call_renorm(self, x):
        """Batch renormalization in training, Keras 3's rule (see the class docstring)."""
        if self.synchronized and self.comm is not None:
            raise NotImplementedError("BatchNormalization: renorm=True with synchronized "
                                      "data-parallel statistics is not implemented")
        feats = (self._axes,) if isinstance(self._axes, int) else self._axes
        reduced = tuple(a for a in range(x.ndim) if a not in feats)
        mean, var = (m.astype(np.float64) for m in F.moments(x.data, axis=reduced))
        eps = self.epsilon
        stddev = np.sqrt(var + eps)
        renorm_stddev = np.maximum(self.renorm_stddev.value, np.sqrt(eps))
        r = stddev / renorm_stddev
        d = (mean - self.renorm_mean.value) / renorm_stddev
        clip = self.renorm_clipping
        if clip.get("rmin") is not None:
            r = np.maximum(r, clip["rmin"])
        if clip.get("rmax") is not None:
            r = np.minimum(r, clip["rmax"])
        if clip.get("dmax") is not None:
            d = np.clip(d, -clip["dmax"], clip["dmax"])
        r, d = r.astype(FLOATX), d.astype(FLOATX)         # constants: no gradient (Keras)
        if self.gamma is not None:
            gamma, beta = self.gamma.tensor * r, self.gamma.tensor * d
        else:
            gamma, beta = r, d
        if self.beta is not None:
            beta = self.beta.tensor + beta
        out = ag.ops.normalization.BatchNorm.apply(x, gamma, beta, axis=self._axes, epsilon=eps,
                                                   training=True)
        rm, m = self.renorm_momentum, self.momentum
        self.renorm_mean.assign(self.renorm_mean.value * rm + mean * (1.0 - rm))
        self.renorm_stddev.assign(self.renorm_stddev.value * rm + stddev * (1.0 - rm))
        self.moving_mean.assign(self.moving_mean.value * m + mean * (1.0 - m))
        moving_stddev = self.moving_stddev.value * m + stddev * (1.0 - m)
        self.moving_stddev.assign(moving_stddev)
        self.moving_variance.assign(np.maximum(moving_stddev.astype(np.float64) ** 2 - eps, 0))
        return out
