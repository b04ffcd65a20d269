"""Which processor this is, from /proc/cpuinfo: ``manual.gemm`` routes its products by it, and the benchmark
records it beside every run.

Hosts may call every generation by one name ("AMD EPYC"): oneDNN's float32 peak was 421 GFLOP/s on one host
and 188 on a family 25 (Zen 4) host, both reported as "AMD EPYC", and only the vendor, family and model tell
them apart.
"""
from __future__ import annotations

import platform
from pathlib import Path

_FIELDS = {"model name": "cpu", "vendor_id": "cpu_vendor", "cpu family": "cpu_family", "model": "cpu_model"}


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The first processor's name, vendor, x86 family and model, as strings; None for what the file does not
    give (an Arm host has no family line) or where there is no such file (not Linux)."""
    info = {"cpu": platform.processor() or platform.machine(), "cpu_vendor": None, "cpu_family": None,
            "cpu_model": None}
    seen_processor = False
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor":
                if seen_processor:
                    break  # the first processor's fields are enough
                seen_processor = True
            elif key in _FIELDS and value:
                info[_FIELDS[key]] = value
    except OSError:
        pass
    return info
