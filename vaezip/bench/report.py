"""Benchmark reports: results.csv (per image), summary.csv (per data set and codec),
results.md (tables + flags, versions, machine, date, command) and two PNG charts.

Charts use matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .classical import (ROW_FIELDS, Aggregate, Row, aggregate, library_versions, rows_to_dicts)

__all__ = [
    "machine_info",
    "write_csv",
    "read_csv",
    "write_summary_csv",
    "markdown_report",
    "plot_bpsp_bars",
    "plot_scatter_vs_best",
    "write_report",
    "have_matplotlib",
]


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        ncpu = os.cpu_count() or 0
    return {"cpu": cpu or "?", "cores": str(ncpu), "os": platform.platform(),
            "python": platform.python_version()}


# --------------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------------


def write_csv(rows: Iterable[Row], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=ROW_FIELDS)
        w.writeheader()
        for d in rows_to_dicts(rows):
            w.writerow({k: _fmt_csv(v) for k, v in d.items()})
    return path


def _fmt_csv(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return v


def read_csv(path: str | os.PathLike) -> list[Row]:
    """Read a results.csv back into rows (e.g. to merge a learned codec's run with classical)."""
    out = []
    types = {f: t for f, t in Row.__annotations__.items()}
    with open(path, newline="") as f:
        for d in csv.DictReader(f):
            kw = {}
            for k, v in d.items():
                t = str(types.get(k, "str"))
                if t == "int":
                    kw[k] = int(v)
                elif t == "float":
                    kw[k] = float(v) if v != "" else math.nan
                elif t == "bool":
                    kw[k] = v == "True"
                else:
                    kw[k] = v
            out.append(Row(**kw))
    return out


def write_summary_csv(aggs: Iterable[Aggregate], path: str | os.PathLike) -> Path:
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=Aggregate.fieldnames())
        w.writeheader()
        for a in aggs:
            w.writerow({k: _fmt_csv(v) for k, v in a.__dict__.items()})
    return path


# --------------------------------------------------------------------------------------------
# markdown
# --------------------------------------------------------------------------------------------


# The codec whose times the others are given relative to, where a run has it: a classical codec of about the
# rates vaezip aims at, so the ratio says how far vaezip's speed is from a real peer's.
SPEED_REFERENCE = "jpegxl-e7"


def _order(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for x in items:
        seen.setdefault(x, None)
    return list(seen)


def _table(aggs: Sequence[Aggregate], value, fmt: str, best=None, projected: bool = False) -> str:
    """`projected`: mark a bound projected from a sample of the tiles with "~"."""
    datasets = _order(a.dataset for a in aggs)
    codecs = _order(a.codec for a in aggs)
    cell = {(a.dataset, a.codec): a for a in aggs}
    lines = ["| data set | images | " + " | ".join(codecs) + " |",
             "|---|---:|" + "---:|" * len(codecs)]
    for ds in datasets:
        vals = {c: value(cell[(ds, c)]) for c in codecs if (ds, c) in cell}
        # A codec that failed on some image is measured on the others only: no rival of the rest for "best"
        finite = {c: v for c, v in vals.items() if v is not None and not math.isnan(v) and cell[(ds, c)].all_ok}
        b = best(finite.values()) if (best and finite) else None
        n = max(cell[(ds, c)].images for c in codecs if (ds, c) in cell)
        cells = []
        for c in codecs:
            a = cell.get((ds, c))
            if a is None:
                cells.append("–")
                continue
            v = vals[c]
            if v is None or math.isnan(v):
                cells.append("n/a")
                continue
            s = ("~" if projected and a.bound_projected else "") + format(v, fmt)
            if not a.all_ok:
                s += f" ({a.failures} failed)"
            cells.append(f"**{s}**" if b is not None and v == b and a.all_ok else s)
        lines.append(f"| {ds} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(rows: Sequence[Row], *, codecs: Sequence = (), command: str | None = None,
                    title: str = "vaezip bench: lossless rates", notes: Sequence[str] = ()) -> str:
    aggs = aggregate(rows)
    out = [f"# {title}", "",
           "bpsp = 8 * total bytes / total subpixels over each data set (lower is better; "
           "best per row in bold, among codecs that coded every image). Every file was decoded and compared with the "
           "input; a codec's failures are counted beside its figure, which covers the other images.", "",
           _table(aggs, lambda a: a.bpsp, ".3f", best=min), ""]
    if any(not math.isnan(a.bound_bpsp) for a in aggs):
        out += ["## Rate bounds (bpsp, e.g. negative ELBO)", "",
                _table(aggs, lambda a: a.bound_bpsp, ".3f", projected=True), ""]
        if any(a.bound_projected for a in aggs):
            out += ["~: projected from the model's estimate of a sample of the tiles, where that sample already ruled "
                    "the model out (compress's early exit), not summed over every tile.", ""]
    out += ["## Encode speed (MB/s of raw 8-bit data, wall time)", "",
            _table(aggs, lambda a: a.encode_MBps, ".3g"), "",
            "## Decode speed (MB/s)", "",
            _table(aggs, lambda a: a.decode_MBps, ".3g"), "",
            "## Total encode time (s)", "", _table(aggs, lambda a: a.encode_s, ".2f"), "",
            "## Total decode time (s)", "", _table(aggs, lambda a: a.decode_s, ".2f"), ""]
    reference = {a.dataset: a for a in aggs if a.codec == SPEED_REFERENCE}
    if reference:
        # Seconds on a shared machine move with its load; ratios to a codec timed in the same run move less.
        def relative(seconds):
            def value(a):
                ref = reference.get(a.dataset)
                return math.nan if ref is None or not seconds(ref) > 0 else seconds(a) / seconds(ref)
            return value

        out += [f"## Encode time relative to {SPEED_REFERENCE} (same run)", "",
                _table(aggs, relative(lambda a: a.encode_s), ".3g"), "",
                f"## Decode time relative to {SPEED_REFERENCE} (same run)", "",
                _table(aggs, relative(lambda a: a.decode_s), ".3g"), ""]
    if codecs:
        out += ["## Codecs and exact flags", "", "| codec | library | flags |", "|---|---|---|"]
        for c in codecs:
            out.append(f"| {c.name} | {getattr(c, 'library', '?')} | `{c.flags}` |")
        out.append("")
    out += ["## Versions", ""]
    out += [f"- {k}: {v}" for k, v in library_versions().items()]
    out += ["", "## Machine and run", ""]
    out += [f"- {k}: {v}" for k, v in machine_info().items()]
    out.append(f"- date: {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    if command:
        out.append(f"- command: `{command}`")
    for n in notes:
        out.append(f"- note: {n}")
    fails = [r for r in rows if not r.roundtrip_ok]
    if fails:
        out += ["", "## Failures", ""]
        out += [f"- {r.dataset} / {r.codec} / {r.image}: {r.error}" for r in fails[:50]]
        if len(fails) > 50:
            out.append(f"- ... and {len(fails) - 50} more")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# charts
# --------------------------------------------------------------------------------------------


def have_matplotlib() -> bool:
    """Charts need matplotlib (the ``bench`` extra); without it the report has tables only."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def plot_bpsp_bars(aggs: Sequence[Aggregate], path: str | os.PathLike) -> Path:
    """Grouped bars: one group per data set, one bar per codec (bpsp)."""
    plt = _plt()
    datasets = _order(a.dataset for a in aggs)
    codecs = _order(a.codec for a in aggs)
    cell = {(a.dataset, a.codec): a.bpsp for a in aggs}
    width = 0.8 / max(len(codecs), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 2.4 + 0.35 * len(datasets) * len(codecs)), 4.5))
    bound = {(a.dataset, a.codec): a.bound_bpsp for a in aggs}
    x = np.arange(len(datasets))
    bound_label = "model bound (negative ELBO)"
    for j, c in enumerate(codecs):
        vals = [cell.get((d, c), math.nan) for d in datasets]
        bars = ax.bar(x + (j - (len(codecs) - 1) / 2) * width, vals, width, label=c)
        for bar, d in zip(bars, datasets):  # a learned codec's bound: a black tick across its bar
            b = bound.get((d, c), math.nan)
            if not math.isnan(b):
                ax.hlines(b, bar.get_x(), bar.get_x() + bar.get_width(), colors="k", lw=1.5, label=bound_label)
                bound_label = "_nolegend_"
        for bar, v in zip(bars, vals):
            if not math.isnan(v):
                ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), ha="center",
                            va="bottom", fontsize=6, rotation=90, xytext=(0, 2),
                            textcoords="offset points")
    ax.set_xticks(x, datasets)
    ax.set_ylabel("bits per subpixel (lower is better)")
    ax.set_title("Lossless rate per data set")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.15)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def best_per_image(rows: Sequence[Row], reference: Sequence[str]) -> dict[tuple[str, int], tuple[float, str]]:
    """(dataset, index) -> (lowest bpsp among ``reference`` codecs, that codec)."""
    ref = set(reference)
    best: dict[tuple[str, int], tuple[float, str]] = {}
    for r in rows:
        if r.codec in ref and r.roundtrip_ok and not math.isnan(r.bpsp):
            k = (r.dataset, r.index)
            if k not in best or r.bpsp < best[k][0]:
                best[k] = (r.bpsp, r.codec)
    return best


def plot_scatter_vs_best(rows: Sequence[Row], codec: str, path: str | os.PathLike, *,
                         reference: Sequence[str] | None = None) -> Path:
    """Per image: x = best ``reference`` codec's bpsp, y = ``codec``'s bpsp (below y=x: better).

    ``reference`` defaults to every other codec in ``rows``.
    """
    plt = _plt()
    if reference is None:
        reference = [c for c in _order(r.codec for r in rows) if c != codec]
    best = best_per_image(rows, reference)
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    lo, hi = math.inf, -math.inf
    for ds in _order(r.dataset for r in rows):
        pts = [(best[(r.dataset, r.index)][0], r.bpsp) for r in rows
               if r.dataset == ds and r.codec == codec and r.roundtrip_ok
               and (r.dataset, r.index) in best]
        if not pts:
            continue
        xs, ys = np.array(pts).T
        wins = int((ys < xs).sum())
        ax.scatter(xs, ys, s=12, alpha=0.7, label=f"{ds} ({wins}/{len(xs)} better)")
        lo, hi = min(lo, xs.min(), ys.min()), max(hi, xs.max(), ys.max())
    if math.isfinite(lo):
        pad = 0.05 * (hi - lo + 1e-9)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8, label="y = x")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("best of " + ", ".join(reference) + " (bpsp)", fontsize=7)
    ax.set_ylabel(f"{codec} (bpsp)")
    ax.set_title(f"{codec} vs best other codec, per image")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(rows: Sequence[Row], out_dir: str | os.PathLike, *, codecs: Sequence = (),
                 command: str | None = None, scatter_codec: str | None = None,
                 reference: Sequence[str] | None = None, title: str = "vaezip bench: lossless rates",
                 notes: Sequence[str] = ()) -> dict[str, Path]:
    """Write results.csv, summary.csv, results.md, bpsp_bars.png and scatter_<codec>.png (the charts
    only when matplotlib is installed).

    ``scatter_codec``: the codec compared per image with the best of ``reference``.  If not
    given: the first codec in ``codecs`` that is not a :class:`ClassicalCodec` (a learned
    codec), else the classical codec with the lowest overall rate.  ``reference`` defaults to
    the classical codecs in ``codecs`` other than ``scatter_codec`` (every other codec in
    ``rows`` when ``codecs`` is empty).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Written into a hidden folder inside it first (one file system: the moves are renames), then moved in, then
    # the last report's files that were not written again removed (a chart of other codecs would contradict the
    # new tables): an error or Ctrl-C while the report is made leaves the last one as it was.
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    try:
        written = _write_report(rows, partial, codecs=codecs, command=command, scatter_codec=scatter_codec,
                                reference=reference, title=title, notes=notes)
        for name in written:
            os.replace(partial / name, out / name)
        for stale in report_files_in(out):
            if stale not in written:
                (out / stale).unlink(missing_ok=True)
        return {name: out / name for name in written}
    finally:
        shutil.rmtree(partial, ignore_errors=True)


# What a report folder holds (and scatter_<codec>.png): write_report replaces them all.
REPORT_FILES = ("results.csv", "summary.csv", "results.md", "bpsp_bars.png")


def report_files_in(out_dir: str | os.PathLike) -> list[str]:
    """The names of the report files (a chart, a table, scatter_*.png) the folder `out_dir` holds: what
    write_report would replace or remove."""
    out = Path(out_dir)
    if not out.is_dir():
        return []
    return [*(name for name in REPORT_FILES if (out / name).exists() or (out / name).is_symlink()),
            *sorted(path.name for path in out.glob("scatter_*.png"))]


def _write_report(rows: Sequence[Row], out: Path, *, codecs: Sequence, command: str | None,
                  scatter_codec: str | None, reference: Sequence[str] | None, title: str,
                  notes: Sequence[str]) -> dict[str, Path]:
    from .classical import ClassicalCodec

    aggs = aggregate(rows)
    files = {
        "results.csv": write_csv(rows, out / "results.csv"),
        "summary.csv": write_summary_csv(aggs, out / "summary.csv"),
    }
    charts = have_matplotlib()
    if not charts:
        notes = [*notes, "charts not drawn: matplotlib is not installed (pip install -e '.[bench]')"]
    md = markdown_report(rows, codecs=codecs, command=command, title=title, notes=notes)
    (out / "results.md").write_text(md)
    files["results.md"] = out / "results.md"
    if aggs and charts:
        files["bpsp_bars.png"] = plot_bpsp_bars(aggs, out / "bpsp_bars.png")
        names = _order(r.codec for r in rows)
        if scatter_codec is None:
            learned = [c.name for c in codecs if not isinstance(c, ClassicalCodec)]
            if learned:
                scatter_codec = learned[0]
            else:
                tot: dict[str, list[int]] = {}
                for a in aggs:
                    t = tot.setdefault(a.codec, [0, 0])
                    t[0] += a.bytes
                    t[1] += a.subpixels
                scatter_codec = min(tot, key=lambda c: tot[c][0] / max(tot[c][1], 1))
        if reference is None:
            classical = [c.name for c in codecs if isinstance(c, ClassicalCodec)]
            reference = [c for c in (classical or names) if c != scatter_codec and c in names]
        if reference and scatter_codec in names:
            p = out / f"scatter_{scatter_codec}.png"
            files[p.name] = plot_scatter_vs_best(rows, scatter_codec, p, reference=reference)
    return files
