"""Fixtures for the inference tests; the helpers live in infer_support (a unique module name:
several folders have a conftest.py, so `from infer_support import` is ambiguous)."""

from infer_support import *  # noqa: F401,F403
