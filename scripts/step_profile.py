#!/usr/bin/env python3
"""Fold Nsight Compute's per-launch CSV (`--csv --page raw --print-units base`, metrics
gpu__time_duration.sum, dram__bytes_read/write.sum, launch__grid_size, launch__block_size) of a
`bench latency --ways steps` run into one decode step's per-kernel table: the launches after
the second-to-last `advance_kernel` up to the last one. Usage: step_profile.py CSV [LATENCY_TXT]
(the replayed graph's ms/token, from the same binary, to set the kernels' sum against)."""
import csv, re, sys
from collections import OrderedDict

def num(v):
    return float((v or "0").replace(",", ""))


rows = []
with open(sys.argv[1], newline="") as f:
    lines = [l for l in f if l.startswith('"')]
reader = csv.DictReader(lines)
for r in reader:
    try:
        t = num(r["gpu__time_duration.sum"])
    except (KeyError, ValueError):
        continue  # the units row
    rows.append({
        "name": re.sub(r"\(.*", "", r["Kernel Name"]).strip(),
        "ns": t,
        "bytes": num(r.get("dram__bytes_read.sum")) + num(r.get("dram__bytes_write.sum")),
        "grid": r.get("launch__grid_size", ""),
        "block": r.get("launch__block_size", ""),
    })
print(f"{len(rows)} launches profiled")
adv = [i for i, r in enumerate(rows) if "advance" in r["name"]]
if len(adv) < 2:
    sys.exit("fewer than two advance_kernel launches: no whole step")
step = rows[adv[-2] + 1: adv[-1] + 1]
total = sum(r["ns"] for r in step)
groups = OrderedDict()
for r in step:
    key = (r["name"], r["grid"], r["block"])
    g = groups.setdefault(key, {"n": 0, "ns": 0.0, "bytes": 0.0})
    g["n"] += 1; g["ns"] += r["ns"]; g["bytes"] += r["bytes"]
print(f"one decode step: {len(step)} launches, kernels' sum {total/1e3:.1f} us (each timed alone; L2 flushed unless NCU_CACHE=none)")
print("%-44s %5s %9s %9s %8s %10s %8s %6s" % ("kernel", "n", "sum us", "each us", "MB each", "GB/s", "grid", "block"))
for (name, grid, block), g in sorted(groups.items(), key=lambda kv: -kv[1]["ns"]):
    each = g["ns"] / g["n"]
    mb = g["bytes"] / g["n"] / 1e6
    print("%-44s %5d %9.1f %9.2f %8.2f %10.0f %8s %6s" % (name[:44], g["n"], g["ns"] / 1e3, each / 1e3, mb, g["bytes"] / g["ns"] if g["ns"] else 0, grid, block))
if len(sys.argv) > 2:
    for l in open(sys.argv[2]):
        m = re.match(r"graph replay\s+([\d.]+)\s+([\d.]+)", l)
        if m:
            ms = float(m.group(2))
            print(f"graph replay {ms:.3f} ms/token; kernels alone {total/1e6:.3f} ms = {total/1e6/ms*100:.0f}%; "
                  f"the rest ({(ms - total/1e6)*1e3:.0f} us, {(ms - total/1e6)*1e3/len(step):.2f} us per launch) is gaps and overlap effects")
