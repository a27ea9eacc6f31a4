"""Fixtures for the training tests; the helpers live in train_support (a unique module name:
several folders have a conftest.py, so `from train_support import` is ambiguous)."""

from train_support import *  # noqa: F401,F403
