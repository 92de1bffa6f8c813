"""Kept for one release: `.pth` files written by blade-plugin 0.1.0 import this path. Installing the hook
happens on import of `blade_plugin.lf.hook`."""

from .lf.hook import *  # noqa: F401,F403
