"""Doctests of modules whose optional dependency is not installed are not collected."""
import importlib.util

collect_ignore = []
if importlib.util.find_spec("torch") is None:
    collect_ignore.append("fastbn/torch")
