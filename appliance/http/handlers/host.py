"""GET /v1/agent/host: the host the agent runs on, shaped as Consul's (agent/host, which reports
gopsutil's structs): `Memory`, `CPU` (one entry per logical CPU), `Host`, `Disk` (the file system
of the data directory), `CollectionTime` (Unix nanoseconds) and `Errors` (what could not be read,
or null). Read from /proc and os; a field the host does not expose is zero or empty, and a part
that cannot be read at all is listed in `Errors` as Consul does.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

from appliance.http.context import HTTPContext
from appliance.http.values import Answer, Request, json_answer

# /proc/meminfo line -> gopsutil's VirtualMemoryStat JSON key
_MEMINFO = {"MemTotal": "total", "MemAvailable": "available", "MemFree": "free", "Active": "active",
            "Inactive": "inactive", "Buffers": "buffers", "Cached": "cached", "Writeback": "writeBack",
            "Dirty": "dirty", "WritebackTmp": "writeBackTmp", "Shmem": "shared", "Slab": "slab",
            "SReclaimable": "sreclaimable", "SUnreclaim": "sunreclaim", "PageTables": "pageTables",
            "SwapCached": "swapCached", "CommitLimit": "commitLimit", "Committed_AS": "committedAS",
            "HighTotal": "highTotal", "HighFree": "highFree", "LowTotal": "lowTotal", "LowFree": "lowFree",
            "SwapTotal": "swapTotal", "SwapFree": "swapFree", "Mapped": "mapped",
            "VmallocTotal": "vmallocTotal", "VmallocUsed": "vmallocUsed", "VmallocChunk": "vmallocChunk",
            "HugePages_Total": "hugePagesTotal", "HugePages_Free": "hugePagesFree",
            "HugePages_Rsvd": "hugePagesRsvd", "HugePages_Surp": "hugePagesSurp", "Hugepagesize": "hugePageSize"}
_COUNTS = {"hugePagesTotal", "hugePagesFree", "hugePagesRsvd", "hugePagesSurp"}  # pages, not kB


def _percent(part: float, whole: float) -> float:
    return part / whole * 100.0 if whole else 0.0


def memory() -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(["total", "available", "used", "usedPercent", "free", *_MEMINFO.values()], 0)
    out["usedPercent"] = 0.0
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        key = _MEMINFO.get(name)
        if key is not None and rest.split():
            value = int(rest.split()[0])
            out[key] = value if key in _COUNTS else value * 1024
    out["used"] = out["total"] - out["available"]
    out["usedPercent"] = _percent(out["used"], out["total"])
    return out


def cpus() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in Path("/proc/cpuinfo").read_text().split("\n\n"):
        entry = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in block.splitlines()) if k.strip()}
        if "processor" not in entry:
            continue
        cache = entry.get("cache size", "0").split()[0]
        out.append({"cpu": int(entry["processor"]), "vendorId": entry.get("vendor_id", ""),
                    "family": entry.get("cpu family", ""), "model": entry.get("model", ""),
                    "stepping": int(entry["stepping"]) if entry.get("stepping", "").isdigit() else 0,
                    "physicalId": entry.get("physical id", ""), "coreId": entry.get("core id", ""),
                    "cores": 1, "modelName": entry.get("model name", ""),
                    "mhz": float(entry.get("cpu MHz", "0") or 0), "cacheSize": int(cache) if cache.isdigit() else 0,
                    "flags": entry.get("flags", "").split(), "microcode": entry.get("microcode", "")})
    return out


def _os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return {}
    return {k: v.strip().strip('"') for k, _, v in (ln.partition("=") for ln in text.splitlines()) if v}


def host() -> dict[str, Any]:
    uptime = int(float(Path("/proc/uptime").read_text().split()[0]))
    release = _os_release()
    try:
        host_id = Path("/etc/machine-id").read_text().strip()
    except OSError:
        host_id = ""
    if len(host_id) == 32:  # gopsutil prints the machine id as a UUID
        host_id = f"{host_id[:8]}-{host_id[8:12]}-{host_id[12:16]}-{host_id[16:20]}-{host_id[20:]}"
    procs = sum(1 for p in os.listdir("/proc") if p.isdigit())
    return {"hostname": socket.gethostname(), "uptime": uptime, "bootTime": int(time.time()) - uptime,
            "procs": procs, "os": platform.system().lower(), "platform": release.get("ID", ""),
            "platformFamily": release.get("ID_LIKE", release.get("ID", "")).split(" ")[0],
            "platformVersion": release.get("VERSION_ID", ""), "kernelVersion": platform.release(),
            "kernelArch": platform.machine(), "virtualizationSystem": "", "virtualizationRole": "",
            "hostId": host_id}


def disk(path: str) -> dict[str, Any]:
    st = os.statvfs(path)
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    inodes_used = st.f_files - st.f_ffree
    fstype = ""
    real = os.path.realpath(path)
    try:  # the longest mount point that holds the path
        best = ""
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and real.startswith(parts[1]) and len(parts[1]) >= len(best):
                best, fstype = parts[1], parts[2]
    except OSError:
        pass
    return {"path": path, "fstype": fstype, "total": total, "free": free, "used": used,
            "usedPercent": _percent(used, used + free), "inodesTotal": st.f_files, "inodesUsed": inodes_used,
            "inodesFree": st.f_ffree, "inodesUsedPercent": _percent(inodes_used, st.f_files)}


def collect(data_dir: str) -> dict[str, Any]:
    """Consul's HostInfo: each part, or its error in `Errors` (null when there is none)."""
    errors: list[str] = []
    parts: dict[str, Any] = {}
    for name, read in (("Memory", memory), ("CPU", cpus), ("Host", host),
                       ("Disk", lambda: disk(data_dir or os.getcwd()))):
        try:
            parts[name] = read()
        except (OSError, ValueError, IndexError, KeyError) as err:
            parts[name] = None
            errors.append(f"{name.lower()}: {err}")
    return {**parts, "CollectionTime": time.time_ns(), "Errors": errors or None}


async def agent_host(req: Request, ctx: HTTPContext) -> Answer:
    return json_answer(req, await asyncio.to_thread(collect, ctx.config.data_dir))
