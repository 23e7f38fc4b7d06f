#!/usr/bin/env python3
"""Plots a soak run's CSV (benches/soak.sh writes target/soak.csv): threads, fds, alive tokio
tasks and resident memory against files processed, the warm-up shaded.

    python3 benches/soak_plot.py target/soak.csv benches/soak.png [WARMUP_SECS]

Needs matplotlib (pip install matplotlib)."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src, out = sys.argv[1], sys.argv[2]
warmup = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(open(src))]
t = [r["t_s"] / 60 for r in rows]
series = [
    ("threads", "process\nthreads", 1),
    ("fds", "process\nopen_fds", 1),
    ("tasks", "watcher_tasks\nalive", 1),
    ("rss_bytes", "resident\nmemory (MB)", 1e6),
]
fig, axes = plt.subplots(len(series), 1, figsize=(7, 6.5), sharex=True, dpi=80)
for ax, (col, label, scale) in zip(axes, series):
    ax.plot(t, [r[col] / scale for r in rows], ".-", ms=3, lw=1)
    ax.axvspan(0, warmup / 60, color="0.9")
    ax.set_ylabel(label, fontsize=8)
    ax.tick_params(labelsize=8)
    lo = min(r[col] for r in rows) / scale
    hi = max(r[col] for r in rows) / scale
    pad = max((hi - lo) * 0.2, 0.5 if scale == 1 else 0.05)
    ax.set_ylim(lo - pad, hi + pad)
files = int(rows[-1]["processed"])
axes[0].set_title(
    f"watcher soak: a file every 50 ms, {files} files, scraped every 5 s (warm-up shaded)",
    fontsize=9,
)
axes[-1].set_xlabel("minutes", fontsize=8)
fig.tight_layout()
fig.savefig(out)
