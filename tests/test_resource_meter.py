"""StageMeter: per-stage wall time and the peak RSS of the process tree (a child's memory counts)."""

from __future__ import annotations

import subprocess
import sys
import time

from blade_plugin.runs.meter import StageMeter


def test_peak_includes_a_child_process_and_time_is_wall_time():
    # the child touches 300 MiB (bytearray pages are written, so they are resident) and holds them for 1.5 s
    code = "import time; b = bytearray(300 * 2**20); time.sleep(1.5)"
    with StageMeter(interval=0.05) as meter:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert meter.peak_mb >= 300
    assert meter.seconds >= 1.5
    with StageMeter(interval=0.05) as idle:
        time.sleep(0.2)
    assert 0 < idle.peak_mb < meter.peak_mb  # a new stage starts its own peak
