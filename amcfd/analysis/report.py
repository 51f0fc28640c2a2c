"""The benchmark's reports: the mean and per-image tables (markdown), the JSON and the PSNR-against-time plot.

``write_reports`` writes ``<work>/<name>.md``, ``.json`` and ``.png`` from the rows and stages of a run
(``analysis/benchmark.py``); the docs section and the README's table are written from them by ``results_doc``.
"""
from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path

import numpy as np

from amcfd.metrics import report_key

BELOW_DB = 0.3     # an image this much below its noisy input (PSNR) is counted in the column 'below input'
EXPLAIN_DB = 0.5   # a trained row this much below its noisy input (mean PSNR) gets a line in 'below_input_notes'

def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (ms, psnr) that no other point beats on both (faster or equal and better or
    equal, one strictly), sorted by time."""
    front = []
    for i, (t, q) in enumerate(points):
        dominated = any((t2 <= t and q2 >= q) and (t2 < t or q2 > q) for j, (t2, q2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def scored(rows: dict) -> dict:
    return {k: v for k, v in rows.items() if "failed" not in v and k != "noisy input"}


def below_input(row: dict, noisy: dict) -> int:
    """How many images of the row are more than BELOW_DB dB below their noisy input (PSNR)."""
    return sum(scores["psnr"] < noisy["per_image"][image]["psnr"] - BELOW_DB
               for image, scores in row["per_image"].items() if image in noisy["per_image"])


def markdown(cfg: dict, rows: dict) -> str:
    """Mean table (every row; failed ones with their error) and the per-image PSNR table."""
    from amcfd.metrics import metric_label

    metrics = cfg["metrics"]
    names = [report_key(m) for m in metrics]
    noisy = rows["noisy input"]
    front = _front_labels(rows)
    head = ["method", *(metric_label(m) for m in metrics), "gain (dB)", "below input", "ms / image", "params",
            "GFLOPs / image", "Pareto", "kind"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in rows.items():
        if "failed" in r:
            lines.append(f"| {label} | failed: {r['failed'].replace('|', '/')} |" + " |" * (len(head) - 2))
            continue
        cells = [f"{r[n]:.2f}" if n.startswith("psnr") else f"{r[n]:.4f}" for n in names]
        psnr = "psnr" in r and "psnr" in noisy
        gain = f"{r['psnr'] - noisy['psnr']:+.2f}" if psnr else ""
        below = str(below_input(r, noisy)) if psnr and label != "noisy input" else ""
        ms = f"{r['ms_per_image']:.0f}" if label != "noisy input" else ""
        params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else ""
        flops = f"{r['gflops']:.1f}" if r.get("gflops") is not None else ""
        kind = r.get("kind", "")
        if r.get("note"):
            kind += f" ({r['note']})"
        lines.append(f"| {label} | " + " | ".join([*cells, gain, below, ms, params, flops,
                                                   "yes" if label in front else "", kind]) + " |")
    ok = [k for k, v in rows.items() if "failed" not in v]
    if "psnr" in names and ok:
        lines += ["", "Per image, PSNR (dB):", "", "| image | " + " | ".join(ok) + " |", "|---|" + "---|" * len(ok)]
        for image in sorted(noisy["per_image"]):
            cells = [f"{rows[k]['per_image'][image]['psnr']:.2f}" if image in rows[k]["per_image"] else ""
                     for k in ok]
            lines.append(f"| {image} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def below_input_notes(rows: dict, stages: dict) -> str:
    """One line per trained row more than EXPLAIN_DB dB below the noisy input: its steps, the teacher it was
    distilled from (and that row's gain), and the longer runs of its entry (``longer_of``) with theirs."""
    noisy = rows["noisy input"]

    def gain(r: dict) -> float:
        return r["psnr"] - noisy["psnr"]

    def steps(entry: str) -> str:
        return f"{stages[entry]['steps']} steps" if entry in stages else "steps not recorded"

    good = {k: v for k, v in scored(rows).items() if "psnr" in v}
    lines = []
    for label, r in good.items():
        if r.get("kind") != "trained" or gain(r) >= -EXPLAIN_DB or r.get("longer_of"):
            continue
        parts = [f"{label}: {gain(r):+.2f} dB after {steps(r['entry'])}"]
        teacher = [(k, v) for k, v in good.items() if v.get("entry") == r.get("teacher")]
        if teacher:
            parts.append(f"distilled from {teacher[0][0]} ({gain(teacher[0][1]):+.2f} dB)")
        for k, v in good.items():
            if v.get("longer_of") == r["entry"] and v.get("method") == r.get("method"):
                change = gain(v) - gain(r)
                verdict = "climbs" if change > 0.1 else "falls" if change < -0.1 else "stays"
                parts.append(f"the longer run {k}, {steps(v['entry'])}: {gain(v):+.2f} dB ({verdict}, {change:+.2f})")
        lines.append("- " + "; ".join(parts) + ".")
    if not lines:
        return ""
    return (f"Trained rows more than {EXPLAIN_DB} dB below their noisy input, with what was measured about them:\n\n"
            + "\n".join(lines))


def _front_labels(rows: dict) -> set:
    good = scored(rows)
    labels = [k for k, v in good.items() if "psnr" in v and v["ms_per_image"] > 0]
    points = [(good[k]["ms_per_image"], good[k]["psnr"]) for k in labels]
    return {labels[i] for i in pareto_front(points)}


def plot(rows: dict, path: Path, title: str, size: tuple[int, int] = (1100, 700)) -> Path:
    """PSNR against ms per image (log scale) as a PNG (OpenCV drawing): every method labelled, the noisy
    input's PSNR as a dashed line, the Pareto front joined."""
    import cv2

    good = {k: v for k, v in scored(rows).items() if "psnr" in v and v["ms_per_image"] > 0}
    width, height = size
    left, right, top, bottom = 90, 40, 60, 70
    img = np.full((height, width, 3), 255, np.uint8)
    if not good:
        cv2.putText(img, "no scored method", (left, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2)
        cv2.imwrite(str(path), img)
        return path
    ms = np.array([v["ms_per_image"] for v in good.values()])
    q = np.array([v["psnr"] for v in good.values()] + [rows["noisy input"]["psnr"]])
    lo_t, hi_t = math.floor(math.log10(ms.min())), math.ceil(math.log10(ms.max()))
    hi_t = max(hi_t, lo_t + 1)
    lo_q, hi_q = math.floor(q.min() - 0.5), math.ceil(q.max() + 0.5)

    def xy(t: float, p: float) -> tuple[int, int]:
        x = left + (math.log10(t) - lo_t) / (hi_t - lo_t) * (width - left - right)
        y = height - bottom - (p - lo_q) / (hi_q - lo_q) * (height - top - bottom)
        return int(round(x)), int(round(y))

    font, grey, black = cv2.FONT_HERSHEY_SIMPLEX, (200, 200, 200), (0, 0, 0)
    for e in range(lo_t, hi_t + 1):                                   # decades
        x, _ = xy(10.0 ** e, lo_q)
        cv2.line(img, (x, top), (x, height - bottom), grey, 1)
        cv2.putText(img, f"{10 ** e:g}", (x - 15, height - bottom + 22), font, 0.5, black, 1, cv2.LINE_AA)
    step = max(1, (hi_q - lo_q) // 8)
    for p in range(lo_q, hi_q + 1, step):
        _, y = xy(10.0 ** lo_t, p)
        cv2.line(img, (left, y), (width - right, y), grey, 1)
        cv2.putText(img, f"{p}", (left - 35, y + 5), font, 0.5, black, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (width - right, height - bottom), black, 1)
    _, y0 = xy(10.0 ** lo_t, rows["noisy input"]["psnr"])
    for x in range(left, width - right, 12):                          # the noisy input: dashed
        cv2.line(img, (x, y0), (min(x + 6, width - right), y0), (120, 120, 120), 1)
    noisy_label = f"noisy input {rows['noisy input']['psnr']:.2f} dB"
    cv2.putText(img, noisy_label, (left + 6, y0 - 6), font, 0.45, (120, 120, 120), 1, cv2.LINE_AA)
    (nw, nh), _ = cv2.getTextSize(noisy_label, font, 0.45, 1)
    labels = list(good)
    front = pareto_front([(good[k]["ms_per_image"], good[k]["psnr"]) for k in labels])
    pts = [xy(good[labels[i]]["ms_per_image"], good[labels[i]]["psnr"]) for i in front]
    for a, b in zip(pts, pts[1:]):
        cv2.line(img, a, b, (40, 40, 220), 2, cv2.LINE_AA)
    points = [xy(good[k]["ms_per_image"], good[k]["psnr"]) for k in labels]
    for i, (x, y) in enumerate(points):
        cv2.circle(img, (x, y), 6, (40, 40, 220) if i in front else (180, 90, 20), -1, cv2.LINE_AA)
    placed: list = [(left + 6, y0 - 6 - nh, left + 6 + nw, y0 - 6)]   # label boxes: each takes the first free spot
    for k, (x, y) in zip(labels, points):
        (tw, th), _ = cv2.getTextSize(k, font, 0.45, 1)
        spots = [(x + 9, y - 6), (x + 9, y + 16), (x - 9 - tw, y - 6), (x - 9 - tw, y + 16), (x + 9, y - 20),
                 (x - 9 - tw, y - 20), (x + 9, y + 30), (x - 9 - tw, y + 30)]
        spots = [(tx, ty) for tx, ty in spots if tx >= 2 and tx + tw <= width - 2] or spots

        tx, ty = next(((sx, sy) for sx, sy in spots
                       if all(sx + tw < a or sx > c or sy < b or sy - th > d for a, b, c, d in placed)), spots[0])
        placed.append((tx, ty - th, tx + tw, ty))
        cv2.putText(img, k, (tx, ty), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 35), font, 0.7, black, 2, cv2.LINE_AA)
    cv2.putText(img, "ms per image (log scale); red: Pareto front", (left + 200, height - 20), font, 0.55, black,
                1, cv2.LINE_AA)
    cv2.putText(img, "PSNR (dB)", (10, top - 10), font, 0.55, black, 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


def busy_note(rows: dict, cores: int) -> str:
    """A sentence for the header when rows were timed with more runnable work than cores (the 1-minute load
    average each row recorded when it was scored), else ''."""
    loads = [v["load"] for v in rows.values() if v.get("load") is not None]
    if not loads or max(loads) <= cores:
        return ""
    return (f" Timed on a busy machine (load average up to {max(loads):.1f} on {cores} cores while scoring): the "
            "times are upper bounds.")


def write_reports(cfg: dict, rows: dict, stages: dict, command: str) -> dict:
    """<work>/<name>.md, .json and .png; returns their paths."""
    from amcfd.analysis.results_doc import provenance_line

    work = Path(cfg["work"])
    work.mkdir(parents=True, exist_ok=True)
    base = work / cfg["name"]
    text = markdown(cfg, rows)
    notes = below_input_notes(rows, stages)
    if notes:
        text += "\n\n" + notes
    minutes = ", ".join(f"{k} {v['steps']} steps / {v['minutes']} min"
                        + (f" ({v['auto']})" if v.get("auto") else "")
                        + (f" (warning: {v['warning']})" if v.get("warning") else "") for k, v in stages.items())
    commits = sorted({v["commit"] for v in [*stages.values(), *rows.values()] if v.get("commit")})
    threads = sorted({v["threads"] for v in rows.values() if v.get("threads")})
    busy = busy_note(rows, os.cpu_count() or 1)
    header = (f"{provenance_line(command)}\n\n{rows['noisy input']['n']} images; training reads only the noisy "
              f"images. Shared budget: {', '.join(f'{k}={v}' for k, v in cfg['budget'].items()) or 'none'}. "
              f"Training: {minutes or 'none'}."
              + (f" Trained and scored at commit {', '.join(commits)} (kept results are not measured again)."
                 if commits else "")
              + (f" ms / image with {', '.join(map(str, threads))} torch thread(s)." if threads else "") + busy
              + f" Below input: images more than {BELOW_DB} dB below their noisy input.\n")
    (base.with_suffix(".md")).write_text(f"# Benchmark: {cfg['name']}\n\n{header}\n{text}\n")
    report = {"name": cfg["name"], "command": command, "config": copy.deepcopy(cfg), "stages": stages, "rows": rows}
    (base.with_suffix(".json")).write_text(json.dumps(report, indent=1) + "\n")
    plot(rows, base.with_suffix(".png"), f"{cfg['name']}: PSNR vs time per image")
    return {"md": base.with_suffix(".md"), "json": base.with_suffix(".json"), "png": base.with_suffix(".png"),
            "table": text, "header": header}
