"""Kept for one release: the documented import path before the package was grouped by concern.
Use `blade_plugin.lf.dataset_info`."""

from .lf.dataset_info import *  # noqa: F401,F403
from .lf.dataset_info import register_dataset  # noqa: F401
