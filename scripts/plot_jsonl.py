#!/usr/bin/env python3
"""Line charts of soma metrics logs (JSONL) as a standalone SVG, standard library only.

usage: python3 scripts/plot_jsonl.py OUT.svg TITLE [--logy] [--ylabel TEXT] SERIES...
  SERIES  LABEL=FILE:FIELD   FIELD a dotted path into a record, list items by index:
          test_loss, test_acc, ep.align_cos.0, ide.rate_gap
x is the epoch: "epoch" records at their epoch, "diag" and "eval" records (soma train
--diag-every N, --eval-every N) at epoch - 1 + step / steps, steps taken from the log's
epoch records.  Several files
may be given for one series, joined with '+' (a run and its resumed continuation).
Example:
  python3 scripts/plot_jsonl.py docs/figures/ep-align.svg "EP alignment" \\
      "layers 1-2=runs/ep/ep-general-2h-fast-mnist.jsonl:ep.align_cos.0"
"""
import json
import math
import sys

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]


def field(rec, path):
    v = rec
    for key in path.split("."):
        if isinstance(v, list):
            i = int(key)
            if i >= len(v):
                return None
            v = v[i]
        elif isinstance(v, dict) and key in v:
            v = v[key]
        else:
            return None
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def load(files, path):
    pts = {}
    for name in files.split("+"):
        recs = []
        with open(name) as f:
            for line in f:
                line = line.strip()
                if line:
                    recs.append(json.loads(line))
        steps = next((r["steps"] for r in recs if r.get("type") == "epoch"), None)
        if steps is None:   # a run stopped inside its first epoch: the batches of one
            run = next((r for r in recs if r.get("type") == "run"), {})
            if run.get("train_samples") and run.get("batch"):
                steps = -(-run["train_samples"] // run["batch"])
        for r in recs:
            t = r.get("type")
            if t == "epoch":
                x = float(r["epoch"])
            elif t in ("diag", "eval") and steps:
                x = r["epoch"] - 1 + r["step"] / steps
            else:
                continue
            y = field(r, path)
            if y is not None:
                pts[x] = y   # a resumed log overrides the epochs it repeats
    return sorted(pts.items())


def nice_ticks(lo, hi, n=5):
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=10 * mag)
    t = math.floor(lo / step) * step
    out = []
    while t <= hi + 1e-9 * step:
        out.append(t)
        t += step
    return out


def main(argv):
    args = argv[1:]
    if len(args) < 3:
        sys.exit(__doc__)
    out, title = args[0], args[1]
    logy, ylabel, series = False, "", []
    i = 2
    while i < len(args):
        a = args[i]
        if a == "--logy":
            logy = True
        elif a == "--ylabel":
            i += 1
            ylabel = args[i]
        else:
            if "=" not in a or ":" not in a.split("=", 1)[1]:
                sys.exit("plot_jsonl: series '%s' is not LABEL=FILE:FIELD" % a)
            label, rest = a.split("=", 1)
            files, path = rest.rsplit(":", 1)
            pts = load(files, path)
            if not pts:
                sys.exit("plot_jsonl: no values of '%s' in %s" % (path, files))
            series.append((label, pts))
        i += 1
    if not series:
        sys.exit("plot_jsonl: no series given")
    W, H, L, R, T, B = 640, 380, 70, 170, 40, 50
    xs = [x for _, p in series for x, _ in p]
    ys = [y for _, p in series for _, y in p]
    if logy:
        if min(ys) <= 0:
            sys.exit("plot_jsonl: --logy needs positive values")
        ys = [math.log10(y) for y in ys]
    x0, x1 = min(0.0, min(xs)), max(xs)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 1, y1 + 1
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def px(x):
        return L + (x - x0) / (x1 - x0 or 1) * (W - L - R)

    def py(y):
        return T + (y1 - y) / (y1 - y0) * (H - T - B)

    s = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
         'font-size="12">' % (W, H), '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="22" font-size="14">%s</text>' % (L, title)]
    for t in nice_ticks(x0, x1):
        if x0 <= t <= x1:
            s.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (px(t), T, px(t), H - B))
            s.append('<text x="%.1f" y="%d" text-anchor="middle">%g</text>' % (px(t), H - B + 16, t))
    for t in (range(math.floor(y0), math.ceil(y1) + 1) if logy else nice_ticks(y0, y1)):
        if y0 <= t <= y1:
            s.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (L, py(t), W - R, py(t)))
            lab = "1e%d" % t if logy else "%g" % round(t, 10)
            s.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (L - 6, py(t) + 4, lab))
    s.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="black"/>' % (L, T, W - L - R, H - T - B))
    s.append('<text x="%d" y="%d" text-anchor="middle">epoch</text>' % ((L + W - R) // 2, H - 12))
    if ylabel:
        s.append('<text x="16" y="%d" transform="rotate(-90 16 %d)" text-anchor="middle">%s</text>'
                 % ((T + H - B) // 2, (T + H - B) // 2, ylabel))
    for k, (label, pts) in enumerate(series):
        c = COLORS[k % len(COLORS)]
        d = " ".join("%.1f,%.1f" % (px(x), py(math.log10(y) if logy else y)) for x, y in pts)
        s.append('<polyline fill="none" stroke="%s" stroke-width="1.6" points="%s"/>' % (c, d))
        ly = T + 14 + 18 * k
        s.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>' % (W - R + 10, ly, W - R + 30, ly, c))
        s.append('<text x="%d" y="%d">%s</text>' % (W - R + 35, ly + 4, label))
    s.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(s) + "\n")


if __name__ == "__main__":
    main(sys.argv)
