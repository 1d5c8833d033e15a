"""Text shared by the layers' and the models' messages."""


def format_shape(shape):
    """``shape`` as Python writes a tuple: ``(None, 3)``, ``(4,)``."""
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
