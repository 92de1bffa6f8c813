"""Wall time and peak memory of a pipeline stage, including the subprocesses it starts (llamafactory-cli)."""

from __future__ import annotations

import resource
import sys
import threading
import time


class StageMeter:
    """Context manager: `seconds` and `peak_mb` (peak resident memory of this process plus its children).

    With psutil (a dependency of accelerate, so present wherever LLaMA-Factory is) a background thread samples
    the RSS of the process tree every `interval` seconds, so the peak is per stage. Without it the figure is
    getrusage's lifetime maximum of this process or of any finished child, whichever is larger.
    """

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.seconds = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            total = 0
            try:
                for proc in [me, *me.children(recursive=True)]:
                    try:
                        total += proc.memory_info().rss
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
            except psutil.Error:
                pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> StageMeter:
        self._started = time.perf_counter()
        try:
            import psutil  # noqa: F401
        except ImportError:
            self._thread = None
        else:
            self._thread = threading.Thread(target=self._sample, name="stage-meter", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._started
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
            peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                       resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
            self.peak_mb = peak * scale / 2**20
