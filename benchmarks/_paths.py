"""Puts `tests/` on the import path: the loopback servers the benchmarks run against (`blade_testing`) are test
helpers, not part of the shipped package."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
