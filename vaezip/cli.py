"""The `vaezip` command: a thin Typer layer over the Python API. Only this module prints.

Exit codes: 0 success, 1 an input or processing error (one line on stderr, nothing partial written),
2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="vaezip: neural lossless image compression (hierarchical VAE + bits-back ANS).",
)
out = Console()
err = Console(stderr=True)


class Failure(Exception):
    """An error already worded for the user."""


@contextmanager
def user_errors():
    """Turn expected failures into one line on stderr and exit code 1; never a traceback."""
    from vaezip.errors import USER_ERRORS

    try:
        yield
    except KeyboardInterrupt:
        err.print("vaezip: interrupted")
        raise typer.Exit(130)
    except (Failure, *USER_ERRORS) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        err.print(f"vaezip: error: {message}", markup=False, highlight=False)
        raise typer.Exit(1)


class RichTrainReporter:
    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None
        self.task = None
        self.last_val = float("nan")
        # In a log file a live bar is useless: print a plain status line every 30 s instead.
        self.plain = not console.is_terminal
        self.last_line = 0.0

    def start(self, info):
        self.console.print(
            f"training on {info['device']} (x{info['world']}): {info['train_images']} images "
            f"({info['val_images']} held out), crops {info['crop'][0]}x{info['crop'][1]}, "
            f"{info['channels']} channel(s), {info['parameters'] / 1e6:.2f} M parameters, "
            f"steps {info['start_step']} -> {info['steps']}",
            highlight=False,
        )
        if self.plain:
            return
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=info["steps"], completed=info["start_step"], status="")

    def step(self, step, stats):
        status = (
            f"loss {stats['loss']:.3f} | val {self.last_val:.3f} bpsp | {stats['images_per_s']:.0f} img/s"
            f" | skipped {stats['skipped']}"
        )
        if self.plain:
            import time

            if time.monotonic() - self.last_line > 30:
                self.last_line = time.monotonic()
                self.console.print(f"step {step}: {status} | lr {stats['lr']:.2e}", highlight=False)
            return
        self.progress.update(self.task, completed=step, status=status)

    def validation(self, step, result):
        self.last_val = result.bound_bpsp
        self.console.print(
            f"step {step}: validation bound {result.bound_bpsp:.4f} bpsp "
            f"(NLL {result.nll_bpsp:.4f} + KL {result.kl_bpsp:.4f}) on {result.images} images",
            highlight=False,
        )

    def checkpoint(self, step, path):
        pass

    def close(self):
        if self.progress is not None:
            self.progress.stop()


@app.command()
def train(
    data: str = typer.Argument(..., help="a folder of images, an .npz file, or a data set name (mnist-train, ...)"),
    preset: str = typer.Option("cpu", help="tiny | cpu | gpu"),
    out_dir: Path = typer.Option(Path("runs/latest"), "--out", "-o", help="run folder (checkpoint last.pt)"),
    steps: int = typer.Option(10_000, help="total number of optimizer steps (counted across resumes)"),
    resume: bool = typer.Option(False, "--resume", help="continue the checkpoint in --out"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    minutes: Optional[float] = typer.Option(None, help="stop (and checkpoint) after this many minutes"),
    batch_size: Optional[int] = typer.Option(None, help="override the preset's batch size"),
    lr: Optional[float] = typer.Option(None, help="override the preset's learning rate"),
    crop: Optional[int] = typer.Option(None, help="override the preset's crop size"),
    decay_steps: Optional[int] = typer.Option(None, help="cosine learning-rate decay length (0: none)"),
    seed: Optional[int] = typer.Option(None, help="override the preset's seed"),
    checkpoint_every: Optional[int] = typer.Option(None, help="steps between checkpoints"),
    val_every: Optional[int] = typer.Option(None, help="steps between validations of the bound"),
):
    """Train a model on your own images (or a named data set)."""
    from vaezip.config import get_preset
    from vaezip.train import train as run_training

    with user_errors():
        chosen = get_preset(preset)
        overrides = {
            key: value
            for key, value in dict(batch_size=batch_size, lr=lr, crop=crop, decay_steps=decay_steps, seed=seed,
                               checkpoint_every=checkpoint_every, val_every=val_every).items()
            if value is not None
        }
        reporter = RichTrainReporter(out)
        try:
            summary = run_training(
                out_dir,
                data,
                chosen,
                steps=steps,
                resume=resume,
                device_name=device,
                reporter=reporter,
                train_overrides=overrides,
                time_limit=None if minutes is None else minutes * 60,
            )
        finally:
            reporter.close()
        out.print(
            f"stopped at step {summary['step']}: validation bound {summary['val_bpsp']:.4f} bpsp "
            f"(best {summary['best_val_bpsp']:.4f}); skipped updates: {summary['skipped_nan']} non-finite, "
            f"{summary['skipped_norm']} large-norm; checkpoint {summary['checkpoint']}",
            highlight=False,
        )


@app.command(name="eval")
def eval_command(
    model: str = typer.Argument(..., help="a run folder, a checkpoint .pt, a .safetensors file or a model name"),
    data: str = typer.Argument(..., help="a folder of images, an .npz file, or a data set name"),
    limit: Optional[int] = typer.Option(None, help="only the first N images"),
    batch_size: int = typer.Option(64),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
):
    """Print the bound (negative ELBO, bits per subpixel) and the KL of each latent group."""
    from vaezip import data as datasets
    from vaezip.api import load_model
    from vaezip.evaluate import evaluate
    from vaezip.train import resolve_device

    with user_errors():
        loaded = load_model(model)
        images = datasets.load(data, limit=limit, channels=loaded.model.config.image_channels)
        target = resolve_device(device)
        with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as bar:
            task = bar.add_task("eval", total=len(images))
            result = evaluate(
                loaded.model.to(target),
                images.images,
                batch_size=batch_size,
                device=target,
                progress=lambda n: bar.advance(task, n),
            )
        table = Table(title=f"{loaded.name} on {images.name}: {result.images} images")
        for column in ("group", "stage", "latent grid", "latent dims / image", "KL bits / subpixel", "share"):
            table.add_column(column, justify="right")
        for group in result.groups:
            share = group.bpsp / result.bound_bpsp if result.bound_bpsp else 0.0
            table.add_row(str(group.group), str(group.stage), group.resolution, str(group.latent_dims),
                          f"{group.bpsp:.4f}", f"{share:.1%}")
        table.add_row("pixels", "", "", "", f"{result.nll_bpsp:.4f}", f"{result.nll_bpsp / result.bound_bpsp:.1%}")
        out.print(table)
        out.print(f"bound: {result.bound_bpsp:.4f} bits per subpixel (KL {result.kl_bpsp:.4f} + NLL {result.nll_bpsp:.4f})",
                  highlight=False)


def main() -> None:  # pragma: no cover - console entry point helper
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
