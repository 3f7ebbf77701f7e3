"""The machine a benchmark ran on, and the memory of its processes (psutil).

The framework workers import `peak_rss_mb` under interpreters that may lack psutil (a framework's
own environment), so psutil is imported inside the functions that need it and `peak_rss_mb`
needs only the standard library where `resource` exists (Linux, macOS, the BSDs).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class Machine:
    """What a table says of the machine its cells were measured on."""

    cpu: str
    logical_cpus: int
    memory_gib: float
    platform: str
    date: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def machine_info() -> Machine:
    import psutil

    return Machine(
        cpu=cpu_name(),
        logical_cpus=psutil.cpu_count(logical=True) or os.cpu_count() or 0,
        memory_gib=psutil.virtual_memory().total / GIB,
        platform=platform.platform(),
        date=time.strftime("%Y-%m-%d"),
    )


def peak_rss_mb() -> float | None:
    """High-water resident set size of this process in MiB; None where no system reports it.

    Linux: VmHWM of /proc/self/status, the high-water mark of this process's own memory. Not
    ru_maxrss there: exec keeps the larger of the parent's peak and the child's, so a worker
    started by a large process would report the parent's peak. Elsewhere the one reader of
    `ru_maxrss`, whose unit is KiB on the BSDs and bytes on macOS.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    try:
        import resource
    except ImportError:  # Windows: psutil's peak working set, when psutil is there
        try:
            import psutil

            return psutil.Process().memory_info().peak_wset / MIB
        except (ImportError, AttributeError):
            return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def tree_rss_gib(pid: int) -> float:
    """Resident memory of a live process and all its descendants, in GiB (0 once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:  # ended between the listing and the reading
            continue
    return total / GIB


def kill_tree(process: subprocess.Popen) -> None:
    """Kill a started process and every process it started, and wait for them."""
    import psutil

    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        children = []
    for child in children:
        try:
            child.kill()
        except psutil.Error:
            continue
    process.kill()
    process.wait()
    psutil.wait_procs(children, timeout=10)
