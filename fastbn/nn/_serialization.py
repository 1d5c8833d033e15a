"""Keras' config protocol, written once for every family in :mod:`fastbn.nn`.

Constraints, regularizers, losses, initializers, layers and optimizers all
rebuild from ``get_config()``'s dict as ``cls(**config)``, print as
``ClassName(key=value, ...)`` and (de)serialize as
``{"class_name": ..., "config": ...}``. Their base classes bind these
functions as their own methods (so the API pages list them on each base).
"""

from . import utils

__all__ = ["empty_config", "from_config", "config_repr", "serialize", "deserialize", "by_name"]


def empty_config(self):
    """The constructor's arguments (Keras' ``get_config``).

    Returns
    -------
    dict
    """
    return {}


def _from_config(cls, config):
    """A new object of this class from :meth:`get_config`'s dict.

    Parameters
    ----------
    config : dict

    Returns
    -------
    object
        An instance of the class this is called on.
    """
    return cls(**config)


from_config = classmethod(_from_config)


def config_repr(show=repr, omit_if_none=()):
    """A ``__repr__`` printing ``ClassName(key=show(value), ...)`` from ``get_config()``.

    ``omit_if_none`` names keys left out while their value is None.
    """
    def __repr__(self):
        args = ", ".join(f"{k}={show(v)}" for k, v in self.get_config().items()
                         if v is not None or k not in omit_if_none)
        return f"{type(self).__name__}({args})"
    return __repr__


def serialize(obj, base, kind):
    """``{"class_name": ..., "config": ...}`` of ``obj``, an instance of ``base``."""
    if not isinstance(obj, base):
        raise TypeError(f"cannot serialize {kind} {obj!r}: only "
                        f"{base.__module__}.{base.__name__} objects have a config")
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def deserialize(config, classes, kind):
    """The instance of one of ``classes`` that :func:`serialize` described."""
    name = config.get("class_name")
    cls = {c.__name__: c for c in classes}.get(name)
    if cls is None:
        raise ValueError(f"unknown {kind} class {name!r}")
    return cls.from_config(dict(config.get("config") or {}))


def by_name(classes):
    """Each class under Keras' snake_case name (``"max_norm"``) and its own (``"MaxNorm"``)."""
    names = {utils.to_snake_case(c.__name__): c for c in classes}
    names.update({c.__name__: c for c in classes})
    return names
