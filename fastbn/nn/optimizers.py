r"""Optimizers with Keras 3's update rules, updating the weights in place.

Each optimizer keeps its state (momentum, Adam's moments) per variable and
one scratch buffer, so a step allocates nothing: at batch 32 the MLP's
784x300 kernel is updated ~1700 times an epoch, and ``w -= lr * g`` would
allocate and free a 0.9 MB temporary each time.
"""
import inspect
import math

import numpy as np

from .. import autograd as ag
from . import _serialization

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop", "get"]


def _array(v):
    """The ndarray a variable, tensor or array stands for (updated in place)."""
    value = getattr(v, "value", None)
    if isinstance(value, np.ndarray):
        return value
    if isinstance(v, ag.Tensor):
        return v.data
    if isinstance(v, np.ndarray):
        return v
    raise TypeError(f"optimizer: cannot update {type(v).__name__}; pass fastbn.nn "
                    f"variables, tensors or NumPy arrays")


class Optimizer:
    """Base class: :meth:`apply` one step of gradients to variables.

    Parameters
    ----------
    learning_rate : float
        May be changed between steps (``opt.learning_rate = 0.1``).

    Attributes
    ----------
    iterations : int
        Steps applied so far; advances once per :meth:`apply`, not once per
        variable.

    Raises
    ------
    ValueError
        If ``learning_rate`` is negative or not finite.

    Notes
    -----
    Subclasses implement ``_update(p, g, v)``, which changes the array ``p``
    in place given its gradient ``g`` (``v`` identifies the variable, for
    per-variable state), and optionally ``_prepare()``, run once per step.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn.optimizers import Optimizer
    >>> class SignSGD(Optimizer):
    ...     def _update(self, p, g, v):
    ...         p -= self.learning_rate * np.sign(g)
    >>> w = np.array([1.0, 1.0]); opt = SignSGD(learning_rate=0.5)
    >>> opt.apply([np.array([3.0, -0.1])], [w]); w, opt.iterations
    (array([0.5, 1.5]), 1)
    """

    def __init__(self, learning_rate):
        self.learning_rate = learning_rate
        self.iterations = 0
        self._state = {}

    @property
    def learning_rate(self):
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value):
        if not (isinstance(value, (int, float, np.floating, np.integer))
                and math.isfinite(value) and value >= 0):
            raise ValueError(f"{type(self).__name__}: learning_rate must be a finite number "
                             f">= 0, got {value!r}")
        self._lr = float(value)

    def _slots(self, v, p, n):
        """``n`` zero-initialised buffers shaped like ``p``, kept per variable."""
        entry = self._state.get(id(v))
        if entry is None or entry[0] is not v:
            entry = (v, [np.zeros_like(p) for _ in range(n)])
            self._state[id(v)] = entry
        return entry[1]

    def apply(self, grads, variables):
        """Update ``variables`` in place with ``grads`` (one step).

        Parameters
        ----------
        grads : list of ndarray or None
            One per variable; None skips that variable.
        variables : list
            :class:`fastbn.nn.Variable`, tensors or arrays, in the same order.

        Raises
        ------
        ValueError
            If the lists differ in length or a gradient's shape differs from its variable's.

        Notes
        -----
        A variable with a ``constraint`` (:mod:`fastbn.nn.constraints`) is
        projected by it right after its update, as Keras' optimizers do.
        """
        if len(grads) != len(variables):
            raise ValueError(f"{type(self).__name__}.apply: {len(grads)} gradients for "
                             f"{len(variables)} variables")
        self._prepare()
        for g, v in zip(grads, variables):
            if g is not None:
                p = _array(v)
                if g.shape != p.shape:
                    raise ValueError(f"{type(self).__name__}.apply: gradient of shape "
                                     f"{g.shape} for a variable of shape {p.shape}")
                self._update(p, g, v)
                constraint = getattr(v, "constraint", None)
                if constraint is not None:          # Keras: projected after the step
                    p[...] = constraint(p)
        self.iterations += 1

    def apply_gradients(self, grads_and_vars):
        """Keras' form: ``apply_gradients(zip(grads, variables))``.

        Parameters
        ----------
        grads_and_vars : iterable of (ndarray or None, variable) pairs
            As for :meth:`apply`, paired.
        """
        pairs = list(grads_and_vars)
        self.apply([g for g, _ in pairs], [v for _, v in pairs])

    def _get_state(self, variables):
        """The state to save: ``iterations``, ``learning_rate`` and each variable's buffers.

        Parameters
        ----------
        variables : list
            The variables whose buffers to save, in a fixed order.

        Returns
        -------
        dict of str to ndarray
            ``"iterations"``, ``"learning_rate"`` and ``"<i>/<j>"``: buffer
            ``j`` of ``variables[i]``.
        """
        out = {"iterations": np.asarray(self.iterations, np.int64),
               "learning_rate": np.asarray(self._lr, np.float64)}
        for i, v in enumerate(variables):
            entry = self._state.get(id(v))
            if entry is not None and entry[0] is v:
                for j, a in enumerate(entry[1]):
                    out[f"{i}/{j}"] = a
        return out

    def _set_state(self, variables, state):
        """Restore what :meth:`_get_state` returned for the same ``variables``.

        Parameters
        ----------
        variables : list
        state : dict of str to ndarray
        """
        self.iterations = int(state.get("iterations", 0))
        if "learning_rate" in state:
            self.learning_rate = float(state["learning_rate"])
        for i, v in enumerate(variables):
            bufs = []
            while f"{i}/{len(bufs)}" in state:
                bufs.append(np.array(state[f"{i}/{len(bufs)}"], dtype=_array(v).dtype))
            if bufs:
                if any(b.shape != _array(v).shape for b in bufs):
                    raise ValueError(f"{type(self).__name__}: saved state for variable {i} "
                                     f"has shape {bufs[0].shape}, the variable "
                                     f"{_array(v).shape}")
                self._state[id(v)] = (v, bufs)
            else:
                self._state.pop(id(v), None)

    def get_config(self):
        """The constructor's arguments (Keras' ``get_config``).

        Returns
        -------
        dict

        Examples
        --------
        >>> from fastbn import nn
        >>> nn.Adam(0.01).get_config()
        {'learning_rate': 0.01, 'beta_1': 0.9, 'beta_2': 0.999, 'epsilon': 1e-07}
        """
        config = {}
        for name in inspect.signature(type(self).__init__).parameters:
            if name != "self":
                config[name] = self._lr if name == "learning_rate" else getattr(self, name)
        return config

    from_config = _serialization.from_config

    def _prepare(self):
        pass

    def _update(self, p, g, v):
        raise NotImplementedError


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum; Keras 3's rule.

    .. math::

        \text{plain: } w \leftarrow w - \eta g; \qquad
        \text{momentum: } m \leftarrow \mu m - \eta g,\;
        w \leftarrow w + m \;\; (\text{Nesterov: } w \leftarrow w + \mu m - \eta g)

    Parameters
    ----------
    learning_rate : float, default 0.01
    momentum : float, default 0.0
    nesterov : bool, default False

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import SGD
    >>> w = np.array([1.0]); opt = SGD(learning_rate=0.1, momentum=0.9)
    >>> opt.apply([np.array([1.0])], [w]); w
    array([0.9])
    >>> opt.apply([np.array([1.0])], [w]); w         # m = 0.9 * -0.1 - 0.1
    array([0.71])
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        super().__init__(learning_rate)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"SGD: momentum must be in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(self, p, g, v):
        lr = self._lr
        if self.momentum == 0.0:
            (buf,) = self._slots(v, p, 1)
            np.multiply(g, lr, out=buf)
            np.subtract(p, buf, out=p)
            return
        m, buf, buf2 = self._slots(v, p, 3)
        mu = self.momentum
        np.multiply(m, mu, out=m)
        np.multiply(g, lr, out=buf)
        np.subtract(m, buf, out=m)               # m = mu m - lr g
        if self.nesterov:
            np.multiply(m, mu, out=buf2)
            np.subtract(buf2, buf, out=buf2)     # mu m - lr g
            np.add(p, buf2, out=p)
        else:
            np.add(p, m, out=p)

    def __repr__(self):
        return (f"SGD(learning_rate={self._lr}, momentum={self.momentum}, "
                f"nesterov={self.nesterov})")


class Adam(Optimizer):
    r"""Adam with Keras 3's formulation.

    With step :math:`t` (1 for the first update),

    .. math::

        \alpha = \eta \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}, \quad
        m \leftarrow m + (g - m)(1 - \beta_1), \quad
        v \leftarrow v + (g^2 - v)(1 - \beta_2), \quad
        w \leftarrow w - \frac{\alpha\, m}{\sqrt{v} + \epsilon}

    :math:`t` advances once per step, shared by all variables.

    Parameters
    ----------
    learning_rate : float, default 0.001
    beta_1 : float, default 0.9
    beta_2 : float, default 0.999
    epsilon : float, default 1e-7

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import Adam
    >>> w = np.array([1.0]); opt = Adam(learning_rate=0.1)
    >>> opt.apply([np.array([2.0])], [w]); w.round(6)     # first step moves ~lr
    array([0.9])
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(learning_rate)
        for name, b in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Adam: {name} must be in [0, 1), got {b!r}")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _prepare(self):
        t = self.iterations + 1
        self._alpha = self._lr * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)

    def _update(self, p, g, v):
        m, s, buf = self._slots(v, p, 3)
        np.subtract(g, m, out=buf)
        buf *= 1.0 - self.beta_1
        m += buf                                  # m += (g - m)(1 - beta_1)
        np.multiply(g, g, out=buf)
        buf -= s
        buf *= 1.0 - self.beta_2
        s += buf                                  # v += (g^2 - v)(1 - beta_2)
        np.sqrt(s, out=buf)
        buf += self.epsilon
        np.divide(m, buf, out=buf)
        buf *= self._alpha
        p -= buf                                  # w -= alpha m / (sqrt(v) + eps)

    def __repr__(self):
        return (f"Adam(learning_rate={self._lr}, beta_1={self.beta_1}, beta_2={self.beta_2}, "
                f"epsilon={self.epsilon})")


class RMSprop(Optimizer):
    r"""RMSprop with Keras 3's update rule (Keras' default optimizer, ``"rmsprop"``).

    With the running mean square :math:`v` (starting at 0),

    .. math::

        v \leftarrow \rho v + (1 - \rho) g^2, \quad
        \Delta = \frac{\eta\, g}{\sqrt{v + \epsilon}}, \quad
        w \leftarrow w - \Delta

    (:math:`\epsilon` inside the square root, as in Keras). ``centered``
    also keeps the running mean :math:`a \leftarrow \rho a + (1 - \rho) g`
    and divides by :math:`\sqrt{v - a^2 + \epsilon}`; ``momentum`` :math:`\mu > 0`
    keeps :math:`m \leftarrow \mu m + \Delta` and steps :math:`w \leftarrow w - m`.

    Parameters
    ----------
    learning_rate : float, default 0.001
    rho : float, default 0.9
    momentum : float, default 0.0
    epsilon : float, default 1e-7
    centered : bool, default False

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn.nn import RMSprop
    >>> w = np.array([1.0]); opt = RMSprop(learning_rate=0.1)
    >>> opt.apply([np.array([2.0])], [w]); w.round(6)     # 1 - 0.1 * 2 / sqrt(0.4)
    array([0.683772])
    """

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False):
        super().__init__(learning_rate)
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"RMSprop: rho must be in [0, 1), got {rho!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"RMSprop: momentum must be in [0, 1], got {momentum!r}")
        if not epsilon >= 0:
            raise ValueError(f"RMSprop: epsilon must be >= 0, got {epsilon!r}")
        self.rho, self.momentum, self.epsilon = float(rho), float(momentum), float(epsilon)
        self.centered = bool(centered)

    def _update(self, p, g, v):
        rho = self.rho
        slots = self._slots(v, p, 2 + self.centered + (self.momentum > 0))
        vel, buf = slots[:2]
        avg = slots[2] if self.centered else None
        mom = slots[-1] if self.momentum > 0 else None
        vel *= rho
        np.multiply(g, g, out=buf)
        buf *= 1.0 - rho
        vel += buf                                # v = rho v + (1 - rho) g^2
        if self.centered:
            avg *= rho
            np.multiply(g, 1.0 - rho, out=buf)
            avg += buf                            # a = rho a + (1 - rho) g
            np.multiply(avg, avg, out=buf)
            np.subtract(vel, buf, out=buf)
            buf += self.epsilon
        else:
            np.add(vel, self.epsilon, out=buf)
        np.sqrt(buf, out=buf)
        np.divide(g, buf, out=buf)
        buf *= self._lr                           # increment = lr g / sqrt(denominator)
        if self.momentum > 0:
            mom *= self.momentum
            mom += buf
            p -= mom
        else:
            p -= buf

    def __repr__(self):
        return (f"RMSprop(learning_rate={self._lr}, rho={self.rho}, momentum={self.momentum}, "
                f"epsilon={self.epsilon}, centered={self.centered})")


_BY_NAME = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}


def get(identifier):
    """An optimizer from a Keras name (``"SGD"``, ``"adam"``, ``"rmsprop"``) or an instance.

    Parameters
    ----------
    identifier : str or Optimizer
        A name, in any case (Keras' defaults for its arguments), or an
        optimizer, returned as it is.

    Returns
    -------
    Optimizer

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything else.

    Examples
    --------
    >>> from fastbn.nn import optimizers
    >>> optimizers.get("SGD")
    SGD(learning_rate=0.01, momentum=0.0, nesterov=False)
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        return _serialization.deserialize(identifier, _BY_NAME.values(), "optimizer")
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _BY_NAME:
            raise ValueError(f"unknown optimizer {identifier!r}; use 'sgd', 'adam' or "
                             f"'rmsprop' (any case) or an optimizer object such as "
                             f"nn.SGD(learning_rate=0.1)")
        return _BY_NAME[key]()
    raise TypeError(f"optimizer must be a name or an Optimizer, got {identifier!r}")
