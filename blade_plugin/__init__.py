"""blade-plugin: BLADE (Li et al., AAAI 2025) as a LLaMA-Factory extension.

Kept import-free on purpose: a `.pth` hook imports this package in every Python process of the
environment, so anything heavy here would slow down every interpreter start.
"""

__version__ = "0.1.0"
