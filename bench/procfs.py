"""What /proc says about a process and the machine (no psutil)."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a whole process (all its threads), in seconds.

    /proc/<pid>/stat counts in clock ticks (usually 10 ms): measure over many
    operations and divide.
    """
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; the fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / CLOCK_TICKS


def status_kib(pid: int, field: str) -> int:
    """A 'kB' line of /proc/<pid>/status, e.g. VmHWM (peak RSS) or VmRSS."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def peak_rss_mib(pid: int) -> float:
    return status_kib(pid, "VmHWM") / 1024


def reset_peak_rss(pid: int) -> bool:
    """Set VmHWM back to the current RSS (clear_refs 5, Linux 4.0+), so that the next peak_rss_mib is the peak
    since now; False when the kernel does not allow it (the peak then counts from the process's start)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mib(pid: int) -> float:
    return status_kib(pid, "VmRSS") / 1024


def machine() -> dict[str, str]:
    model, cores = "unknown", 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown":
                    model = value.strip()
                elif key == "processor":
                    cores += 1
    except OSError:
        pass
    memory = "unknown"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    return {
        "CPU": model,
        "logical cores": str(cores or os.cpu_count() or "?"),
        "memory": memory,
        "Python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "OS": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used since boot (every core, not idle/iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def own_tree_seconds() -> float:
    """CPU seconds of this process plus its children that have been waited for (stat cutime/cstime).

    Between benchmarks every child has been stopped and reaped, so this covers the whole tree.
    """
    with open("/proc/self/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(x) for x in fields[11:15]) / CLOCK_TICKS
