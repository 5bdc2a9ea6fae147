"""``vaezip bench``: classical codecs and vaezip (per image and as one archive) on named data sets or
folders, with per-data-set default limits sized for a 2-core CPU, and a report (:func:`write_report`).

Use :func:`prepare` (loads the images, picks a model per image mode, builds the codecs; every user
error is raised here, before anything long runs), then :func:`execute`, then :func:`report`.
"""
from __future__ import annotations

import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .classical import CODEC_NAMES, WARM_UP_SIDE, Row, get_codecs, run
from .learned import ARCHIVE_NAME, ArchiveFlags, VaezipCodec, _shown, run_archive

__all__ = ["DEFAULT_SETS", "DEFAULT_LIMITS", "LEARNED_NAMES", "DEFAULT_CODECS", "Plan", "SetPlan",
           "given_twice", "parse_codecs", "prepare", "execute", "report"]

#: what ``vaezip bench`` runs with no data set arguments
DEFAULT_SETS: tuple[str, ...] = ("mnist-test", "imagenette32-val", "imagenette56-val", "cifar4k-holdout", "kodak")

#: first N images of each named set unless ``--limit`` is given (folders and .npz files: all images).
#: Sized when vaezip took minutes a Kodak image (2026-11-22), so that the default run (DEFAULT_SETS, every
#: codec, vaezip per image and as an archive) stayed within ~15 minutes on a 2-core CPU; it now takes 34 s
#: (2026-12-06, a shared 2-core AMD EPYC).  The report records the limits and the wall time of the run.
DEFAULT_LIMITS: dict[str, int] = {
    "mnist-test": 30,
    "imagenette32-val": 30,
    "imagenette56-val": 10,
    "cifar4k-holdout": 30,
    "kodak": 1,
    # not in the default run: full-size photos take vaezip minutes per image on a CPU
    "photos": 1,
    "photos-wikimedia": 1,
    "mcmaster": 1,
    "gray8bit": 1,
    "mnist-train": 50,
    "imagenette32-train": 50,
    "cifar4k-train": 50,
}

MODEL_PATH_NAME = "vaezip-model"  # one file per image, the model path forced (no classical coding)
FAST_NAME = "vaezip-fast"  # one file per image, compress --fast (no network runs)
LEARNED_NAMES: tuple[str, ...] = ("vaezip", ARCHIVE_NAME, MODEL_PATH_NAME, FAST_NAME)
DEFAULT_CODECS: tuple[str, ...] = (*CODEC_NAMES, "vaezip", ARCHIVE_NAME)


def parse_codecs(values: Sequence[str] | None) -> list[str]:
    """``--codecs`` values (repeated and/or comma separated; ``all`` = every known codec; ``classical``
    = the default classical line-up) -> codec names, in order, without duplicates."""
    from .classical import _FACTORIES

    if not values:
        return list(DEFAULT_CODECS)
    out: list[str] = []
    for v in values:
        for name in (s.strip() for s in v.split(",")):
            if not name:
                continue
            names = {"all": [*_FACTORIES, *LEARNED_NAMES], "classical": list(CODEC_NAMES)}.get(name, [name])
            for n in names:
                if n not in _FACTORIES and n not in LEARNED_NAMES:
                    raise ValueError(f"unknown codec {n!r}; known: {', '.join([*_FACTORIES, *LEARNED_NAMES])}")
                if n not in out:
                    out.append(n)
    if not out:
        raise ValueError("--codecs named no codec")
    return out


@dataclass
class SetPlan:
    images: object  # vaezip.data.ImageSet
    source: str
    limit: int | None
    codecs: list  # per-image codecs, classical first, then vaezip
    archive: VaezipCodec | None = None

    @property
    def name(self) -> str:
        return self.images.name

    @property
    def steps(self) -> int:
        return len(self.images) * len(self.codecs) + (1 if self.archive is not None else 0)


@dataclass
class Plan:
    sets: list[SetPlan]
    codec_names: list[str]
    models: dict[int, object] = field(default_factory=dict)  # channels -> LoadedModel
    device: str = "auto"
    seconds: float = math.nan
    skipped: list[str] = field(default_factory=list)  # classical codecs not available here

    @property
    def steps(self) -> int:
        return sum(s.steps for s in self.sets)

    def all_codecs(self) -> list:
        """Every codec object once (for the flags table): classical, then vaezip per model, then archives."""
        seen: dict[tuple[str, str], object] = {}
        for s in self.sets:
            for c in s.codecs:
                seen.setdefault((c.name, c.flags), c)
        for s in self.sets:
            if s.archive is not None:
                a = ArchiveFlags(s.archive)
                seen.setdefault((a.name, a.flags), a)
        return list(seen.values())


def _load_models(specs: Sequence[str], identify: bool = False) -> dict[int, object]:
    """`identify`: a shipped model's identity only (no weights, no torch), all that coding with no network needs."""
    from vaezip.errors import CheckpointError
    from vaezip.models import identify_model, load_model

    models: dict[int, object] = {}
    for spec in specs:
        loaded = identify_model(spec) if identify else load_model(spec)
        ch = int(loaded.config.image_channels)
        if ch in models:
            raise CheckpointError(f"two --model for {('grey' if ch == 1 else 'colour')} images: "
                                  f"{models[ch].source} and {loaded.source}")
        models[ch] = loaded
    return models


def _model_for(channels: int, models: dict[int, object], identify: bool = False):
    from vaezip.models import default_model, identify_model, load_model

    if channels not in models:
        name = default_model("L" if channels == 1 else "RGB")
        models[channels] = identify_model(name) if identify else load_model(name)
    return models[channels]


def given_twice(sources: Sequence[str | os.PathLike]) -> str | None:
    """A data set among `sources` that another names too (a folder by its real path), or None."""
    seen = set()
    for src in sources:
        key = os.path.realpath(src) if os.path.exists(src) else os.fspath(src)
        if key in seen:
            return os.fspath(src)
        seen.add(key)
    return None


def prepare(sources: Sequence[str] = (), *, models: Sequence[str] = (), limit: int | None = None,
            codecs: Sequence[str] | None = None, tile: int | None = None, device: str = "auto",
            limits: dict[str, int] | None = None, exclude: str | os.PathLike | None = None) -> Plan:
    """Load the data sets (default :data:`DEFAULT_SETS`; each capped at ``limit``, else its entry in
    ``limits`` (default :data:`DEFAULT_LIMITS`)), load a model per image mode (``models``: names, run
    folders or weights files, at most one grey and one colour; missing modes use the shipped default),
    and build the codecs (``codecs``: names, default every classical codec + vaezip + vaezip-archive).
    ``exclude``: a folder whose images no data set takes (the report's own: `bench .` run twice would measure
    its charts)."""
    from vaezip.data import load, names_data_set

    names = parse_codecs(codecs)
    classical_names = [n for n in names if n not in LEARNED_NAMES]
    classical = get_codecs(classical_names)
    skipped = [n for n in classical_names if n not in {c.name for c in classical}]
    learned = [n for n in names if n in LEARNED_NAMES]
    if not classical and not learned:  # an empty report, exit 0, was the run's only result
        raise ValueError(f"no codec to run: {', '.join(skipped)} "
                         f"{'is' if len(skipped) == 1 else 'are'} not available here (pip install imagecodecs)")
    twice = given_twice(sources)
    if twice is not None:  # its images were measured twice, in one column
        raise ValueError(f"data set {twice} given twice")
    limits = DEFAULT_LIMITS if limits is None else limits
    if learned and device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, not {device!r}")
    if learned and device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    identify = learned == [FAST_NAME]  # no network runs: no weights read, no torch (for shipped models)
    loaded = _load_models(models, identify) if learned else {}
    given = dict(loaded)
    plans: list[SetPlan] = []
    defaults = not sources  # names the user did not type: the data sets, whatever folder here has one's name
    for src in (list(sources) or list(DEFAULT_SETS)):
        # a data set's own limit, not a folder's that has its name (a folder `kodak` here, typed, is the user's)
        named = defaults or names_data_set(os.fspath(src))
        n = limit if limit is not None else limits.get(os.fspath(src)) if named else None
        iset = load(src, limit=n, exclude=exclude, data_set=defaults)
        if any(plan.name == iset.name for plan in plans) or any(Path(other).name == iset.name and other != src
                                                               for other in sources):
            # two folders of one name (a/set, b/set): each its own column, named as given
            iset = iset.subset(range(len(iset)), name=os.fspath(src))
        cs: list = list(classical)
        archive = None
        if learned:
            codec = VaezipCodec(_model_for(iset.channels, loaded, identify), tile=tile, device=device)
            if "vaezip" in learned:
                cs.append(codec)
            if MODEL_PATH_NAME in learned:
                cs.append(VaezipCodec(codec.model, tile=tile, device=device, name=MODEL_PATH_NAME, classical=False))
            if FAST_NAME in learned:
                cs.append(VaezipCodec(codec.model, tile=tile, device=device, name=FAST_NAME, fast=True))
            if ARCHIVE_NAME in learned and (len(iset) > 1 or "vaezip" not in learned):
                archive = codec  # (an archive of one image is the per-image file: not coded twice)
        plans.append(SetPlan(iset, os.fspath(src), n, cs, archive))
    for channels, model in given.items():
        if all(s.images.channels != channels for s in plans):
            warnings.warn(f"--model {model.name} codes {'grey' if channels == 1 else 'colour'} images, and no data "
                          f"set here has them: the shipped default codes these", stacklevel=2)
    return Plan(plans, names, loaded, device, skipped=skipped)


def execute(plan: Plan, progress: Callable[[Row], None] | None = None) -> list[Row]:
    """Run every codec on every data set of ``plan`` (``plan.seconds`` gets the wall time)."""
    started = time.perf_counter()
    rows: list[Row] = []
    for s in plan.sets:
        rows += run(s.images, s.codecs, dataset=s.name, progress=progress)
        if s.archive is not None:
            rows.append(run_archive(s.images, s.archive, dataset=s.name, progress=progress))
    plan.seconds = time.perf_counter() - started
    return rows


def _notes(plan: Plan) -> list[str]:
    notes = []
    for s in plan.sets:
        lim = "all images" if s.limit is None else f"first {s.limit}"
        if s.images.skipped:
            lim = "all images it could read" if s.limit is None else f"first {s.limit} it could read"
        shapes = {im.shape for im in s.images}
        shape = "x".join(map(str, next(iter(shapes)))) if len(shapes) == 1 else "mixed sizes"
        notes.append(f"data set {s.name} ({s.source}): {len(s.images)} images ({lim}; HxWxC {shape}, "
                     f"{s.images.subpixels} subpixels)")
        notes += [f"data set {s.name}, as read (every codec measured these samples): {change}"
                  for change in s.images.changed]
        if s.images.skipped:
            shown = ", ".join(s.images.passed_over[:10]) + (", ..." if len(s.images.passed_over) > 10 else "")
            notes.append(f"data set {s.name}: {s.images.skipped} file(s) passed over, measured by no codec: {shown}")
    for ch, m in sorted(plan.models.items()):
        notes.append(f"vaezip model for {'grey' if ch == 1 else 'colour'} images: {m.name} "
                     f"({_shown(m.source)}, sha256 {m.sha256[:16]})")
    if plan.models:
        torch = sys.modules.get("torch")  # loaded with the models (not for vaezip-fast alone)
        threads = f"; torch threads: {torch.get_num_threads()}" if torch is not None else "; no torch (no network)"
        notes.append(f"vaezip device: {plan.device}{threads}")
        notes.append("vaezip = one .vz file per image (header, entry and checksum counted in every file; each "
                     "stores the name 'image' and, as every codec here, the samples as read, no metadata); "
                     "vaezip-archive = all images of the data set in one .vz archive (bits-back chained); "
                     "bound = the model's negative ELBO (+ ideal side-plane cost) for the same images, as compress "
                     "reports it: from the coding pass where the model's stream was coded, else the model's "
                     "estimate (~: projected from a sample of the tiles)")
    single = [s.name for s in plan.sets if s.archive is None and len(s.images) == 1
              and ARCHIVE_NAME in plan.codec_names and "vaezip" in plan.codec_names]
    if single:
        notes.append(f"no vaezip-archive row for {', '.join(single)}: one image, so the archive is the "
                     "vaezip file itself")
    if plan.skipped:
        notes.append(f"codecs not available here, skipped: {', '.join(plan.skipped)}")
    notes.append("default limits (first N images, `--limit` overrides): "
                 + ", ".join(f"{k} {v}" for k, v in DEFAULT_LIMITS.items() if k in DEFAULT_SETS)
                 + f"; default data sets: {', '.join(DEFAULT_SETS)}")
    notes.append(f"times: each codec first codes a crop of each data set's first image (at most {WARM_UP_SIDE}x"
                 f"{WARM_UP_SIDE}), untimed, so that no row pays a first call's imports and compiled kernels")
    if not math.isnan(plan.seconds):
        notes.append(f"total wall time of the run: {plan.seconds:.0f} s")
    return notes


def report(rows: Sequence[Row], plan: Plan, out_dir: str | os.PathLike, *, command: str | None = None) -> dict[str, Path]:
    """results.csv, summary.csv, results.md (with the notes: limits, models, wall time), bpsp_bars.png and
    scatter_vaezip.png (vaezip per image vs the best classical codec on that image)."""
    from .report import write_report

    names = {r.codec for r in rows}
    scatter = "vaezip" if "vaezip" in names else None
    if scatter is None:
        totals: dict[str, list[int]] = {}
        for r in rows:
            if r.codec not in LEARNED_NAMES and r.roundtrip_ok and r.bytes >= 0:
                t = totals.setdefault(r.codec, [0, 0])
                t[0] += r.bytes
                t[1] += r.subpixels
        scatter = min(totals, key=lambda c: totals[c][0] / max(totals[c][1], 1)) if totals else None
    classical = [c for c in dict.fromkeys(r.codec for r in rows) if c not in LEARNED_NAMES and c != scatter]
    # no classical codec to compare with: no scatter chart (reference=[] turns it off)
    return write_report(rows, out_dir, codecs=plan.all_codecs(), command=command, scatter_codec=scatter,
                        reference=classical, notes=_notes(plan))
