#!/usr/bin/env python3
"""Summarise a results directory of compare.sh as a markdown table.

Usage: summarize.py RESULTS_DIR

Reads <bench>-<before|after>-r<N>.txt. Each bench prints a JSON line at the end (taken as is);
a few extra figures are parsed from its text lines. Per metric: every run's value (in run
order), the median for before and after, and after/before of the medians.
"""
import json
import re
import statistics
import sys
from pathlib import Path

# (bench, key, label, better) -- better: "higher" / "lower" / "" (informational)
METRICS = [
    ("submit", "acked_per_s", "**acked submissions/s** (headline)", "higher"),
    ("submit", "p50_ms", "latency p50 ms", "lower"),
    ("submit", "p99_ms", "latency p99 ms", "lower"),
    ("submit", "baseline_commits_per_s", "redb commit-per-request baseline /s (same run)", ""),
    ("submit", "ratio", "chimed / commit-per-request", "higher"),
    ("submit", "commits_per_s", "commits/s", ""),
    ("submit", "changes_per_commit", "changes per commit", ""),
    ("submit", "cpu_us_per_submission", "daemon CPU us per submission", "lower"),
    ("submit", "engine_us", "engine thread CPU us per submission", "lower"),
    ("submit", "rss_mib", "daemon RSS MiB", "lower"),
    ("submit", "foreign_pct", "_other processes' CPU during the run, % of machine_", "lower"),
    ("spawn", "median_ratio", "**chimed / raw spawn rate, median of rounds** (headline; cgroups on where the bench has them)", "higher"),
    ("spawn", "median_ratio_off", "chimed / raw spawn rate, --no-cgroups", "higher"),
    ("spawn", "chimed_per_s", "chimed jobs/s (mean of rounds)", "higher"),
    ("spawn", "chimed_per_s_off", "chimed jobs/s, --no-cgroups", "higher"),
    ("spawn", "cpu_us_per_job_off", "chimed CPU us per job, --no-cgroups", "lower"),
    ("spawn", "raw_per_s", "raw spawns/s (mean of raw phases)", ""),
    ("spawn", "commits_per_job", "commits per job", ""),
    ("spawn", "cpu_us_per_job", "chimed CPU us per job", "lower"),
    ("spawn", "foreign_pct", "_other processes' CPU during the run, % of machine_", "lower"),
]

NUM = r"([0-9]+(?:\.[0-9]+)?)"


def parse(path: Path):
    text = path.read_text(errors="replace")
    figures = {}
    for line in text.splitlines():
        if line.startswith('{"bench"'):
            try:
                figures.update(json.loads(line))
            except json.JSONDecodeError:
                pass
    m = re.search(r"daemon CPU: " + NUM + r"% of one core, " + NUM + r" us per submission", text)
    if m:
        figures["cpu_us_per_submission"] = float(m.group(2))
    raws = [float(x) for x in re.findall(r"^raw +" + NUM + r" spawns/s", text, re.M)]
    if raws:
        figures["raw_per_s"] = sum(raws) / len(raws)
    m = re.search(r"^# exit (\d+); wall ([0-9.]+) s; loadavg before: ([0-9. ]+); after: ([0-9. ]+)", text, re.M)
    meta = {}
    if m:
        meta = {"exit": int(m.group(1)), "wall": float(m.group(2)),
                "load_before": float(m.group(3).split()[0]), "load_after": float(m.group(4).split()[0])}
    m = re.search(r"other processes during the run: (-?[0-9.]+)%", text)
    if m:
        figures["foreign_pct"] = max(0.0, float(m.group(1)))
    ok = meta.get("exit", 1) == 0 and '{"bench"' in text
    return figures, meta, ok


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if a >= 1 else f"{v:.3f}"


def main():
    out = Path(sys.argv[1])
    runs = {}  # (bench, side) -> list of (round, figures)
    failed, notes = [], []
    files = sorted(out.glob("*-r*.txt"), key=lambda p: (p.name.split("-")[0], p.name.split("-")[1],
                                                        int(re.search(r"-r(\d+)", p.name).group(1))))
    for f in files:
        m = re.match(r"(submit|spawn)-(before|after)-r(\d+)\.txt$", f.name)
        if not m:
            continue
        bench, side, rnd = m.group(1), m.group(2), int(m.group(3))
        figures, meta, ok = parse(f)
        if not ok:
            failed.append(f.name)
            continue
        runs.setdefault((bench, side), []).append((rnd, figures, meta))

    meta_file = out / "meta.txt"
    if meta_file.exists():
        print("```")
        print(meta_file.read_text().rstrip())
        print("```")
        print()
    print("| bench | metric | better | before runs | before median | after runs | after median | after/before |")
    print("|---|---|---|---|---|---|---|---|")
    for bench, key, label, better in METRICS:
        b = [r[1].get(key) for r in runs.get((bench, "before"), []) if r[1].get(key) is not None]
        a = [r[1].get(key) for r in runs.get((bench, "after"), []) if r[1].get(key) is not None]
        if not a and not b:
            continue
        bm = statistics.median(b) if b else None
        am = statistics.median(a) if a else None
        ratio = f"{am / bm:.3f}" if bm and am is not None else "-"
        print(f"| {bench} | {label} | {better} | {', '.join(fmt(x) for x in b)} | {fmt(bm)} "
              f"| {', '.join(fmt(x) for x in a)} | {fmt(am)} | {ratio} |")
    # Per-round spawn ratios, for a look at the spread inside each run.
    for side in ("before", "after"):
        rows = runs.get(("spawn", side), [])
        if rows:
            notes.append(f"spawn per-round ratios, {side}: "
                         + "; ".join(f"r{r}: {', '.join(f'{x:.2f}' for x in fig.get('ratios', []))}"
                                     for r, fig, _ in rows))
    loads = [(bench, side, r, meta) for (bench, side), rows in runs.items() for r, _, meta in rows if meta]
    if loads:
        hi = max(loads, key=lambda x: x[3]["load_before"])
        notes.append(f"1-min loadavg at run start: {min(x[3]['load_before'] for x in loads):.2f}"
                     f"-{hi[3]['load_before']:.2f} (highest before {hi[0]} {hi[1]} r{hi[2]})")
        for bench in ("submit", "spawn"):
            walls = [x[3]["wall"] for x in loads if x[0] == bench]
            if walls:
                notes.append(f"{bench} wall time per run: {min(walls):.0f}-{max(walls):.0f} s")
    if failed:
        notes.append("FAILED runs (left out): " + ", ".join(failed))
    print()
    for n in notes:
        print(f"- {n}")


if __name__ == "__main__":
    main()
