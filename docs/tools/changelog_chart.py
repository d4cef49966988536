#!/usr/bin/env python3
"""Turn BenchmarkCheckpointChangelog output into a CSV and an SVG chart.

    go test -run '^$' -bench CheckpointChangelog -benchtime 1x ./test/integration/ > out.txt
    python3 docs/tools/changelog_chart.py out.txt [more.txt ...]

writes docs/checkpoint-changelog.csv and docs/checkpoint-changelog.svg
(next to this script's parent). Only the standard library is used.
"""

import csv
import re
import sys
from pathlib import Path

LINE = re.compile(
    r"(?P<accounts>\d+) accounts, live (?P<live>[\d.]+) MB, (?P<storage>dir|s3) (?P<mode>full|incremental|changelog): "
    r"(?P<per_snap>[\d.]+) MB written per snapshot \((?P<of_full>[\d.]+)% of full; per round [\d. ]+ MB\), "
    r"pause median (?P<pause_p50>[\d.]+) ms max (?P<pause_max>[\d.]+) ms, durable median (?P<durable>\d+) ms, "
    r"dir (?P<dir_end>[\d.]+) MB at the end, mean (?P<dir_mean>[\d.]+) MB max (?P<dir_max>[\d.]+) MB over the rounds "
    r"\((?P<dir_mean_pct>\d+)% / (?P<dir_max_pct>\d+)% of full's; retention \d+; per round [\d. ]+ MB\), "
    r"restore median (?P<restore>\d+) ms \((?P<segments>\d+) segments applied"
)

FIELDS = ["accounts", "storage", "mode", "live", "per_snap", "of_full", "pause_p50", "pause_max", "durable",
          "dir_end", "dir_mean", "dir_max", "dir_mean_pct", "dir_max_pct", "restore", "segments"]
MODES = ["full", "incremental", "changelog"]
COLOURS = {"full": "#888888", "incremental": "#4c72b0", "changelog": "#dd8452"}


def parse(paths):
    rows = {}
    for p in paths:
        for line in Path(p).read_text().splitlines():
            m = LINE.search(line)
            if m:
                r = m.groupdict()
                rows[(int(r["accounts"]), r["storage"], r["mode"])] = r
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1], MODES.index(k[2])))]


def count(n):
    n = int(n)
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def panel(out, x0, y0, w, h, title, groups, series, values, ymax, unit, line=None):
    """Grouped bars: one group per label in groups, one bar per series."""
    out.append(f'<text x="{x0 + w / 2:.0f}" y="{y0 - 10:.0f}" font-size="13" text-anchor="middle" font-weight="bold">{title}</text>')
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#333"/>')
    for i in range(5):
        v = ymax * i / 4
        y = y0 + h - h * i / 4
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}{unit}</text>')
    if line is not None:
        y = y0 + h - h * min(line, ymax) / ymax
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#c00" stroke-dasharray="5,4"/>')
        out.append(f'<text x="{x0 + w + 4}" y="{y + 4:.1f}" fill="#c00">{line:g}{unit}</text>')
    gw = w / len(groups)
    bw = gw * 0.8 / len(series)
    for gi, g in enumerate(groups):
        gx = x0 + gi * gw + gw * 0.1
        out.append(f'<text x="{x0 + gi * gw + gw / 2:.1f}" y="{y0 + h + 16}" text-anchor="middle">{g}</text>')
        for si, (name, colour) in enumerate(series):
            v = values.get((g, name))
            if v is None:
                continue
            bh = h * min(v, ymax) / ymax
            x = gx + si * bw
            out.append(f'<rect x="{x:.1f}" y="{y0 + h - bh:.1f}" width="{bw - 1:.1f}" height="{bh:.1f}" fill="{colour}"/>')
            out.append(f'<text x="{x + bw / 2:.1f}" y="{y0 + h - bh - 3:.1f}" font-size="9" text-anchor="middle">{v:.3g}</text>')


def svg(rows):
    sizes = []
    for r in rows:
        c = count(r["accounts"])
        if c not in sizes:
            sizes.append(c)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="1100" height="470" viewBox="0 0 1100 470" '
           'font-family="sans-serif" font-size="11">', '<rect width="100%" height="100%" fill="white"/>',
           '<text x="550" y="20" font-size="15" text-anchor="middle">Checkpoints: full, incremental and changelog, '
           '10% of accounts updated per round (BenchmarkCheckpointChangelog)</text>']
    written, restore = {}, {}
    for r in rows:
        g = count(r["accounts"])
        if r["storage"] == "dir" and r["mode"] != "full":
            written[(g, r["mode"])] = float(r["of_full"])
        restore[(g, f'{r["storage"]} {r["mode"]}')] = float(r["restore"])
    panel(out, 70, 60, 410, 320, "Written per snapshot, % of full (mean over a base cycle)", sizes,
          [(m, COLOURS[m]) for m in MODES[1:]], written, 40, "%", line=10)
    # Restore: the changelog restore over the incremental one on the same storage (the target's
    # ratio), so that sizes from 10k to 5M share one axis.
    rel = {}
    for g in sizes:
        for st in ("dir", "s3"):
            ref, v = restore.get((g, f"{st} incremental")), restore.get((g, f"{st} changelog"))
            if ref and v is not None:
                rel[(g, st)] = v / ref
    panel(out, 590, 60, 450, 320, "Restore time, changelog / incremental (same storage)", sizes,
          [("dir", COLOURS["changelog"]), ("s3", COLOURS["changelog"] + "99")], rel, 10, "x", line=2)
    y = 420
    x = 70
    for name, colour in [(m, COLOURS[m]) for m in MODES[1:]] + [("S3 (versitygw)", COLOURS["changelog"] + "99")]:
        out.append(f'<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{x + 16}" y="{y + 10}">{name}</text>')
        x += 130
    out.append(f'<text x="70" y="{y + 34}">accounts in the partition\'s state; restores are medians of 5, '
               'including opening the store; S3 is versitygw on loopback</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    rows = parse(sys.argv[1:])
    if not rows:
        sys.exit("no BenchmarkCheckpointChangelog result lines found")
    docs = Path(__file__).resolve().parent.parent
    with open(docs / "checkpoint-changelog.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (docs / "checkpoint-changelog.svg").write_text(svg(rows))
    print(f"{len(rows)} rows -> {docs / 'checkpoint-changelog.csv'}, {docs / 'checkpoint-changelog.svg'}")


if __name__ == "__main__":
    main()
