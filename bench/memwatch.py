"""Peak anonymous and file-backed resident memory of this process, sampled in a thread.

``VmHWM`` (the kernel's peak RSS) counts every page of a memory-mapped file that the
process touched, pages the kernel can drop at any time without writing them anywhere;
it cannot say how much of the peak was the process's own (anonymous) memory. The kernel
keeps no high-water mark of ``RssAnon``, so a thread samples ``/proc/self/status``
every ``interval`` seconds; a spike shorter than that can be missed (VmHWM cannot).
"""

from __future__ import annotations

import threading
from pathlib import Path

KEYS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM")


def status_mb() -> dict[str, float]:
    """The current ``KEYS`` of /proc/self/status in MB (empty off Linux)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in KEYS:
            out[key] = int(rest.split()[0]) / 1024
    return out


class MemWatch:
    """Peaks of each ``KEYS`` value since start, and since the last :meth:`phase` call."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak: dict[str, float] = {}
        self.phase_peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> dict[str, float]:
        now = status_mb()
        with self._lock:
            for key, v in now.items():
                self.peak[key] = max(self.peak.get(key, 0.0), v)
                self.phase_peak[key] = max(self.phase_peak.get(key, 0.0), v)
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def phase(self) -> dict[str, float]:
        """Peaks since the previous call (MB), then start a new phase."""
        self.sample()
        with self._lock:
            out, self.phase_peak = self.phase_peak, {}
        return {k: round(v) for k, v in out.items()}

    def __enter__(self) -> MemWatch:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
