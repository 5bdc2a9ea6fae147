"""The `vaezip` command: a thin Typer layer over the Python API. Only this module prints.

Exit codes: 0 success, 1 an input or processing error (one line on stderr, nothing partial written),
2 a usage error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM; 129 for SIGHUP). `--debug` (or
VAEZIP_DEBUG=1) adds the full traceback before the one-line error.
"""

from __future__ import annotations

import errno
import math
import os
import sys
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vaezip import __version__
from vaezip.allocator import retain_freed_memory  # light: ctypes and os
from vaezip.files import Terminated, png_file_name, png_file_names, shown  # light: no torch, numpy or Pillow

# --samples: codec.tilekinds.SAMPLE_COUNTS, repeated here so that the CLI imports no numpy before it needs to
# (tests/test_importance.py holds the two equal)
IMPORTANCE_SAMPLES = (2, 4, 8, 16)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="vaezip: neural lossless image compression (hierarchical VAE + bits-back ANS).",
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
)
PIPE_CLOSED = 128 + 13  # the status of a process that SIGPIPE ended (gzip's, a shell's `| head`)


def _reader_gone() -> int:
    """The exit status where whoever read standard output went away (`| head`): SIGPIPE's, quietly. Standard
    output goes to the null device: what is still buffered there would fail again at exit."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return PIPE_CLOSED


def _require_stdout() -> None:
    """Where standard output carries the command's output (`info`, the `models` listing): closed when the process
    started (`>&-`), rich printed nothing and the command said it succeeded."""
    if sys.stdout is None:
        raise Failure("standard output is closed")


def _on_broken_pipe(console: Console) -> None:
    """Every rich console's in the command's process (vaezip's, and Typer's for the help; main() installs it): a
    reader that went away (`vaezip info *.vz | head -1`) ends the command as a SIGPIPE would, 141, where rich's own
    exits 1 (a failure, though nothing failed)."""
    console.quiet = True
    raise typer.Exit(_reader_gone())


# No markup and no emoji codes: a file name may hold "[red]" or ":x:", which rich would take for them.
out = Console(emoji=False, markup=False, highlight=False)
if not out.is_terminal:
    # A pipe or a log file has no width: rich would wrap tables and long lines at 80 columns (or $COLUMNS),
    # which breaks grep and cut. Tables take only the width their cells need.
    out.width = 10_000
# One line per message, also in logs and pipes.
err = Console(stderr=True, soft_wrap=True, emoji=False, markup=False, highlight=False)

# Set by the app's options on every invocation (CliRunner runs many in one process).
_options = {"debug": False}


class Failure(Exception):
    """An error already worded for the user."""


class UsageFailure(Failure):
    """A bad option value: one line like any Failure, but exit code 2 (a usage error)."""


def _debugging() -> bool:
    return _options["debug"] or os.environ.get("VAEZIP_DEBUG", "").strip() not in ("", "0")


def _print_traceback(error: BaseException) -> None:
    import traceback

    # Failures often reword another exception `from None`: the traceback worth seeing is that one's.
    error.__suppress_context__ = False
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    sys.stderr.flush()


def _show_version(value: bool) -> None:
    if value:
        out.print(f"vaezip {__version__}", markup=False, highlight=False)
        raise typer.Exit(0)


@app.callback()
def _app_options(
    version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_show_version,
                                 help="print the version and exit"),
    debug: bool = typer.Option(False, "--debug", help="on an error, show the full traceback before the one-line "
                               "message (also VAEZIP_DEBUG=1)"),
) -> None:
    _options["debug"] = debug


_PYTHON_SHOWWARNING = warnings.showwarning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, as an error is (Python's shows the source line under it); in full with --debug."""
    if _debugging():
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)
        return
    if category.__name__ == "DecompressionBombWarning":  # Pillow's, of an image vaezip refuses in its own words
        return
    text = str(message)
    # The library's own warnings name vaezip for readers of the API's warnings; the CLI's prefix already does.
    _tell("warning", text.removeprefix("vaezip: "))


@contextmanager
def _warnings_of(path: str):
    """The warnings raised within (Pillow's, of a damaged part of a file it reads past: `Corrupt EXIF data`,
    `Truncated File Read`), as lines that name the file `path`, for the caller to tell in the file's turn (-q: not
    at all), instead of lines at once that do not say which file they are of; none where the block raises (the
    error's line is the file's one line). Pillow's DecompressionBombWarning is left out, as _one_line_warning leaves
    it out."""
    told: list[str] = []
    with warnings.catch_warnings(record=True) as caught:  # the filters as they are (a new context shows each again)
        yield told
    told += [f"{path}: {str(warning.message).strip().removeprefix('vaezip: ')}"  # '-': as stdin's errors name it
             for warning in caught if warning.category.__name__ != "DecompressionBombWarning"]


def _tell(kind: str, text: str) -> None:
    """`vaezip: KIND: TEXT` on stderr, one line (names escaped, no rich markup; soft_wrap: no wrapping whatever
    the terminal width, where rich would wrap at 80 columns in a pipe): an error or a warning."""
    err.print(f"vaezip: {kind}: {shown(text)}", markup=False, highlight=False, soft_wrap=True)


def _tell_each(kind: str, lines: list[str]) -> None:
    for text in lines:
        _tell(kind, text)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed: not a terminal
        return False


def _refuse_terminal_input(inputs: list[str], what: str) -> None:
    """'-' read from a terminal would wait for typed binary data (gzip refuses it too)."""
    if "-" in inputs and _is_terminal(sys.stdin):
        raise Failure(f"refusing to read {what} from a terminal: redirect stdin (< FILE) or name a file")


def _refuse_terminal_output(what: str) -> None:
    """Binary data on a terminal garbles it and helps nobody (zstd and gzip refuse too)."""
    if _is_terminal(sys.stdout):
        raise Failure(f"refusing to write {what} to a terminal: redirect stdout (> FILE) or use -o FILE")


def _check_tile(tile: int | None) -> None:
    """A tile side decoders read (unpack.MAX_TILE at most), before any work."""
    from vaezip.unpack import MAX_TILE  # numpy and codec/, no torch

    if tile is not None and tile < 1:
        raise UsageFailure(f"--tile must be a positive number of pixels, not {tile}")
    if tile is not None and tile > MAX_TILE:
        raise UsageFailure(f"--tile must be at most {MAX_TILE} pixels (the largest tile a .vz holds), not {tile}")


def _check_stdin_once(inputs: list[str]) -> None:
    if inputs.count("-") > 1:
        raise UsageFailure("'-' (stdin) is given more than once: it can be read once")


def _check_device(device: str) -> None:
    from vaezip.devices import DEVICE_NAMES  # no torch

    if device not in DEVICE_NAMES:
        raise UsageFailure(f"--device must be {', '.join(DEVICE_NAMES[:-1])} or {DEVICE_NAMES[-1]}, not {device!r}")


def _user_error_types() -> tuple[type[BaseException], ...]:
    """vaezip.errors.USER_ERRORS without importing it (it imports torch): every class there is a ValueError or
    an OSError, and if the module is loaded its tuple is added as it stands."""
    errors = sys.modules.get("vaezip.errors")
    return (Failure, ValueError, OSError, MemoryError, *getattr(errors, "USER_ERRORS", ()))


def _error_message(error: BaseException) -> str:
    if isinstance(error, MemoryError):  # its own text is empty, or the size asked for
        return "out of memory (the image, or the limit on this process's memory, too large)"
    if isinstance(error, OSError) and error.strerror and str(error).startswith("[Errno "):
        # The system's own words, as a shell's tools say them: `NAME: File name too long`, not Python's
        # `[Errno 36] File name too long: 'NAME'`
        names = [os.fsdecode(name) for name in (error.filename, error.filename2) if isinstance(name, (str, bytes))]
        return " -> ".join(names) + f": {error.strerror}" if names else error.strerror  # a rename's: from -> to
    return str(error).strip() or type(error).__name__


# Whether user_errors said `vaezip: interrupted`: typer turns a Ctrl-C outside it (while it parses the command line)
# into exit 130 without a word, which main() then says.
_interruption_told = False


@contextmanager
def user_errors():
    """Turn expected failures into one line on stderr and exit code 1; never a traceback. Ctrl-C exits 130,
    SIGTERM 143 (SIGHUP 129) where signals_as_exceptions is active; temporaries are removed on the way out."""
    try:
        yield
    except BrokenPipeError:  # whoever read the output stopped (`| head`): quietly, as a SIGPIPE would end it
        raise typer.Exit(_reader_gone()) from None
    except KeyboardInterrupt as stop:
        if _debugging():  # where a run that seemed to hang was
            _print_traceback(stop)
        global _interruption_told
        _interruption_told = True
        err.print("vaezip: interrupted")
        raise typer.Exit(130)
    except Terminated as stop:
        err.print("vaezip: terminated")
        raise typer.Exit(stop.exit_code)
    except _user_error_types() as error:
        # USER_ERRORS holds ValueError and OSError, so a bug raising one also lands here: --debug shows it.
        if _debugging():
            _print_traceback(error)
        # Escaped, not cut at a newline: a file name may hold one (and control characters must not reach the
        # terminal); library messages are single lines otherwise.
        _tell("error", _error_message(error))
        raise typer.Exit(2 if isinstance(error, UsageFailure) else 1)


class RichTrainReporter:
    def __init__(self, console: Console, resume_command: str | None = None, crop_given: int | None = None):
        self.console = console
        self.crop_given = crop_given  # --crop, where given: a set of one smaller size is said to be cropped smaller
        # What continues a stopped run, said when it stops (`vaezip train DATA --resume --out RUN`)
        self.resume_command = resume_command
        self.progress: Progress | None = None
        self.task = None
        self.last_val = float("nan")
        # In a log file a live bar is useless: print a plain status line every 30 s instead.
        self.plain = not console.is_terminal
        self.last_line = 0.0
        # Its reader went away (`vaezip train ... | head`): nothing more is printed, and the loop stops and saves
        # (train: the reporter's `closed`), where it ended at the failed print, the steps since the last checkpoint
        # lost
        self.closed = False
        self.write_error: OSError | None = None  # why standard output could not be written (a full disk), if so

    def _print(self, *args, **kwargs) -> None:
        if self.closed:
            return
        try:
            self.console.print(*args, **kwargs)
        except (BrokenPipeError, typer.Exit, SystemExit):  # rich's broken-pipe handler's (main()'s: typer.Exit)
            self.closed = True
        except OSError as error:  # `> /dev/full`: the run stops and saves too, then says so (exit 1)
            self.closed, self.write_error = True, error

    def start(self, info):
        # A mixture of differently sized sets has one crop size per part.
        crops = info["crop"] if isinstance(info["crop"][0], tuple) else (info["crop"],)
        init = f", started from {info['init']['name']}" if info.get("init") else ""
        target = f"steps {info['start_step']} -> {info['steps']}" if info.get("steps") is not None else \
            f"from step {info['start_step']}"
        if info.get("steps") is not None and info["steps"] <= info["start_step"]:  # a finished run resumed
            target = f"at step {info['start_step']} already (--steps {info['steps']}): no step to train"
        if info.get("time_limit") is not None:
            target += f", for {info['time_limit'] / 60:g} minutes"
            if info.get("time_schedule"):
                target += " (learning rate decays over that time)"
        self._print(
            f"training on {info['device']} (x{info['world']}, {info.get('threads', '?')} CPU thread(s)): "
            f"{_counted(info['train_images'], 'image')} to train on ({info['val_images']} more held out), "
            f"crops {' / '.join(f'{h}x{w}' for h, w in crops)}, {info['channels']} channel(s), "
            f"{info['parameters'] / 1e6:.2f} M parameters, {target}{init}",
            highlight=False, markup=False,
        )
        if info.get("too_small"):
            _tell("warning", f"{_counted(info['too_small'], 'image')} smaller than the crop not trained on (the "
                             f"count above leaves them out; --crop takes smaller crops)")
        if self.crop_given is not None and info.get("clipped"):  # a named data set's own size (MNIST's) goes unsaid
            for height, width in info["clipped"]:
                _tell("warning", f"--crop {self.crop_given}: the images are {width}x{height} (width x height), so the "
                                 f"crops are {min(width, self.crop_given)}x{min(height, self.crop_given)}")
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
        # Without a step target the total is the plan made from the time left (known after a few steps).
        self.task = self.progress.add_task("train", total=info["steps"], completed=info["start_step"], status="")

    def step(self, step, stats):
        val = "-" if self.last_val != self.last_val else f"{self.last_val:.3f}"  # nan: no validation yet
        status = (
            f"loss {stats['loss']:.3f} | val {val} bpsp | {stats['images_per_s']:.0f} img/s"
            f" | skipped {stats['skipped']}"
        )
        planned = stats.get("planned_steps")
        if self.plain:
            import time

            if time.monotonic() - self.last_line > 30:
                self.last_line = time.monotonic()
                of = f" of ~{planned}" if planned is not None else ""
                left = stats.get("seconds_left")
                eta = f" | {left / 60:.1f} min left" if left is not None else ""
                self._print(f"step {step}{of}: {status} | lr {stats['lr']:.2e}{eta}", highlight=False)
            return
        self.progress.update(self.task, completed=step, status=status,
                             **({"total": planned} if planned is not None else {}))

    def validation(self, step, result):
        self.last_val = result.bound_bpsp
        self._print(
            f"step {step}: validation bound {result.bound_bpsp:.4f} bpsp "
            f"(NLL {result.nll_bpsp:.4f} + KL {result.kl_bpsp:.4f}) on {result.images} images",
            highlight=False,
        )

    def coded(self, step, achieved_bpsp, bound_bpsp, images):
        if math.isnan(achieved_bpsp):  # the predictor's file, whatever the weights: nothing of the model's to show
            self._print(f"step {step}: {images} validation images compressed for real: no tile went through the "
                        f"model (the held-out images too few or small: a stream's first tiles are the predictor's)",
                        highlight=False)
            return
        self._print(
            f"step {step}: {images} validation images compressed for real: achieved {achieved_bpsp:.4f} bpsp "
            f"vs bound {bound_bpsp:.4f} ({achieved_bpsp / bound_bpsp:.3f}x, first tiles and header included)",
            highlight=False,
        )

    def checkpoint(self, step, path):
        pass

    def stopped(self, step, path, signum):
        self.close()
        again = self.resume_command or f"--resume --out {path.parent}"
        self._print(f"stopped at step {step}: checkpoint saved to {path} ({again} continues it)", highlight=False,
                    markup=False)

    def close(self):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


# The default thread count: one per physical core this process may use that other work leaves idle, at most
# this many. Measured on a busy 2-core machine (another training job on one core): 1 thread trained 1.2 s
# per step, 2 threads 1.8 s (3.6 s with OpenMP's default spinning waits): threads that wait for a core
# cost more than they give. Small convolutions on 32x32 crops scale poorly past 4 threads.
MAX_DEFAULT_THREADS = 4


def _physical_cores() -> int:
    """Physical cores this process may run on: its CPU affinity, hyper-threads counted once, capped by a
    cgroup CPU quota (containers)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        try:
            cores.add(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip())
        except OSError:
            cores.add(str(cpu))
    count = max(1, len(cores))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return count


def default_threads() -> int:
    """One thread per idle physical core (the 1-minute load average says how busy the machine is), at least
    1, at most MAX_DEFAULT_THREADS."""
    cores = _physical_cores()
    try:
        busy = os.getloadavg()[0] / (os.cpu_count() or 1)
    except (OSError, AttributeError):
        busy = 0.0
    return max(1, min(MAX_DEFAULT_THREADS, round(cores * (1.0 - min(1.0, max(0.0, busy))))))


# Clock-driven work of a `vaezip train` session (seconds), on top of the preset's every-N-steps.
CHECKPOINT_SECONDS = 300
FIRST_VALIDATION_SECONDS = 60
VALIDATION_SECONDS = 600


@app.command()
def train(
    data: str = typer.Argument(..., help="a folder of images, an .npz file, a data set name (mnist-train, ...), "
                               "or a mixture NAME@WEIGHT+NAME@WEIGHT (each batch from one part)"),
    preset: Optional[str] = typer.Option(None, help="tiny | cpu | gpu: the model of a run from scratch (default "
                                         "cpu); giving it for a folder of your images trains from scratch"),
    out_dir: str = typer.Option("runs/latest", "--out", "-o", help="run folder (checkpoint last.pt)"),
    steps: Optional[int] = typer.Option(None, help="total number of optimizer steps (counted across resumes); "
                                        "default 10,000, or as many as --minutes allow; with --resume alone, "
                                        "the run's own"),
    resume: bool = typer.Option(False, "--resume", help="continue the checkpoint in --out"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    minutes: Optional[float] = typer.Option(None, help="stop (and checkpoint) after this many minutes; the "
                                            "learning-rate decay and the ETA are planned to end then"),
    batch_size: Optional[int] = typer.Option(None, help="override the preset's batch size"),
    lr: Optional[float] = typer.Option(None, help="override the learning rate (the preset's; 2e-4 when "
                                       "starting from a trained model: the shipped one, or --init's)"),
    crop: Optional[int] = typer.Option(None, help="override the preset's crop size"),
    decay_steps: Optional[int] = typer.Option(None, help="cosine learning-rate decay length (0: none); default: "
                                              "over --steps, or over the time --minutes gives"),
    seed: Optional[int] = typer.Option(None, help="override the preset's seed"),
    checkpoint_every: Optional[int] = typer.Option(None, help="steps between checkpoints (there is also one "
                                                   "every 5 minutes, and on Ctrl-C)"),
    val_every: Optional[int] = typer.Option(None, help="steps between validations of the bound (there is "
                                            "also one at the start of a run that starts from a model, else after "
                                            "the first minute, then every 10 minutes)"),
    kl_warmup: Optional[int] = typer.Option(None, "--kl-warmup", metavar="STEPS",
                                            help="ramp the KL term's weight in the training loss linearly (1/STEPS at "
                                            "the first step) to 1 over the first STEPS steps (default 0: full weight from the "
                                            "start); validation always reports the full-weight bound"),
    kl_balance: bool = typer.Option(False, "--kl-balance",
                                    help="balance the latent groups' KL terms during the KL warm-up (NVAE): "
                                    "coefficients proportional to each group's KL per latent position (its KL "
                                    "divided by its spatial size), averaging 1; needs --kl-warmup"),
    importance_samples: Optional[int] = typer.Option(None, "--importance-samples", metavar="K",
                                                     help="train on DVAE##'s importance-weighted bound over K "
                                                     "posterior samples per image (annealed by --kl-warmup; "
                                                     "default 1: the ELBO): the bound compress --samples K "
                                                     "pays; each step costs about K times as much"),
    init: Optional[str] = typer.Option(None, help="start from this model's weights (run folder, .pt, "
                                       ".safetensors or model name); its architecture replaces the preset's. "
                                       "Default for a folder of your images: the shipped model for its mode"),
    from_scratch: bool = typer.Option(False, "--from-scratch", help="for a folder of your images: start from "
                                      "random weights (the --preset model) instead of the shipped model"),
    channels: Optional[int] = typer.Option(None, help="1: train a grey model (colour images converted to luma); "
                                           "3: colour; default: colour if any image is in colour"),
    pixel_context: Optional[int] = typer.Option(None, help="hidden width of the causal pixel-context head "
                                                "(0: none); with --init, the head is added to that model"),
    train_only_context: bool = typer.Option(False, "--train-only-context",
                                            help="train the pixel-context head alone, the rest frozen"),
    residual_posterior: bool = typer.Option(False, "--residual-posterior",
                                            help="a new model whose posterior is relative to its prior (NVAE): "
                                            "each latent group's posterior head outputs a shift of the prior "
                                            "mean and a factor on the prior std; not with --init of a model "
                                            "without it (start from --preset or --from-scratch)"),
    likelihood: Optional[str] = typer.Option(None, "--likelihood", metavar="NAME",
                                             help="a new model's pixel likelihood: logistic-mixture (default; "
                                             "the preset's components, R -> G -> B coupling), gaussian (sigma-VAE: "
                                             "one learned sigma per channel), gaussian-optimal (sigma-VAE's "
                                             "optimal sigma: each tile's own, stored in the file) or categorical "
                                             "(256 logits per subpixel); not with --init of a model with another"),
    channel_coupling: Optional[bool] = typer.Option(None, "--channel-coupling/--no-channel-coupling",
                                                    help="a new logistic-mixture model's R -> G -> B coupling "
                                                    "(default: on); off: channels independent given the latents"),
    context_order: Optional[str] = typer.Option(None, "--context-order", metavar="ORDER",
                                                help="with --pixel-context: rows (default: every other pixel of a "
                                                "row at once, reading the rows above) or scales (DVAE++'s "
                                                "multi-scale decoder: a stride-4 grid first, then finer grids, 5 "
                                                "phases a tile, each reading earlier pixels on every side)"),
    binary_groups: Optional[int] = typer.Option(None, "--binary-groups", metavar="N",
                                                help="a new model whose first N latent groups (top-down: the "
                                                "lowest resolution's first) are binary, DVAE++'s Bernoulli latents "
                                                "(trained through the overlapping relaxation, coded as they are: "
                                                "at most 20 bits each to pop, usually under 1); default 0"),
    global_latents: Optional[int] = typer.Option(None, "--global-latents", metavar="D",
                                                 help="a new model with a global group of D latents per tile "
                                                 "(DVAE++): prior N(0, I), posterior from the whole tile's "
                                                 "encoding, coded before the other groups; added to a start "
                                                 "model (--init, or the shipped one for a folder of your "
                                                 "images) as nothing, so the run starts as that model; "
                                                 "default 0"),
    binary_beta: Optional[float] = typer.Option(None, "--binary-beta", metavar="BETA",
                                                help="the relaxation's inverse temperature for binary groups, "
                                                "at most 64 (default 8, the paper's): larger is closer to the "
                                                "binary latents the coder uses, with noisier gradients; unused "
                                                "without binary groups"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: one per idle physical "
                                          "core, at most 4; or OMP_NUM_THREADS where set)"),
    name: Optional[str] = typer.Option(None, "--name", help="at the end, install the model as a user model of "
                                       "this name (vaezip compress -m NAME), unless it codes the held-out images "
                                       "worse than the shipped model"),
    force: bool = typer.Option(False, "--force", "-f", help="with --name: replace an installed user model of "
                                "that name, and install even a model worse than the shipped one"),
):
    """Train a model on your own images (or a named data set; NAME@WEIGHT+NAME@WEIGHT mixes sources).

    A folder of your images fine-tunes the shipped default of its mode (colour or grey: `vaezip models`)
    unless --init, --preset or --from-scratch says otherwise. At the end, the new model, the shipped one and
    WebP / JPEG-XL code held-out images for real, side by side. Ctrl-C saves a checkpoint (--resume continues it)."""
    from vaezip.files import signals_as_exceptions

    with user_errors(), signals_as_exceptions():  # SIGTERM outside the loop's own handling: 143
        out_dir = _folder_option(out_dir, "--out")
        _check_device(device)
        if threads is not None and threads < 1:
            raise UsageFailure(f"--threads must be at least 1, not {threads}")
        if minutes is not None and not minutes > 0:
            raise UsageFailure(f"--minutes must be positive, not {minutes}")
        if steps is not None and steps < 0:
            raise UsageFailure(f"--steps must not be negative, not {steps}")
        # One line each, as the others (typer's own range checks printed a usage box); known before any data loads
        for flag, value, least in (("--batch-size", batch_size, 1), ("--crop", crop, 1), ("--seed", seed, 0),
                                   ("--checkpoint-every", checkpoint_every, 1), ("--val-every", val_every, 1),
                                   ("--decay-steps", decay_steps, 0)):
            if value is not None and value < least:
                raise UsageFailure(f"{flag} must be at least {least}, not {value}")
        if lr is not None and not 0 < lr < math.inf:
            raise UsageFailure(f"--lr must be a positive number, not {lr}")
        if channels not in (None, 1, 3):
            raise UsageFailure(f"--channels must be 1 or 3, not {channels}")
        from vaezip.config import PRESETS

        if preset is not None and preset not in PRESETS:
            raise UsageFailure(f"--preset must be one of {', '.join(PRESETS)}, not {preset!r}")
        if kl_warmup is not None and kl_warmup < 0:
            raise UsageFailure(f"--kl-warmup must not be negative, not {kl_warmup}")
        if kl_balance and not kl_warmup:
            raise UsageFailure("--kl-balance only applies during a KL warm-up: give --kl-warmup STEPS too")
        if importance_samples is not None and importance_samples < 1:
            raise UsageFailure(f"--importance-samples must be at least 1, not {importance_samples}")
        if likelihood == "gaussian-optimal" and pixel_context:
            raise UsageFailure("--likelihood gaussian-optimal does not combine with --pixel-context: the head would "
                               "refine the means after each tile's sigma was chosen from them")
        if kl_balance and importance_samples not in (None, 1):
            raise UsageFailure("--kl-balance weights the ELBO's KL terms: it does not combine with "
                               "--importance-samples above 1")
        if from_scratch and init is not None:
            raise UsageFailure("--from-scratch and --init contradict each other: give one")
        from vaezip.config import LIKELIHOODS

        if likelihood is not None and likelihood not in LIKELIHOODS:
            raise UsageFailure(f"--likelihood must be one of {', '.join(LIKELIHOODS)}, not {likelihood!r}")
        if channel_coupling is False and likelihood not in (None, "logistic-mixture"):
            raise UsageFailure("--no-channel-coupling applies to the logistic mixture only")
        from vaezip.config import CONTEXT_OFFSETS

        if context_order is not None and context_order not in CONTEXT_OFFSETS:
            raise UsageFailure(f"--context-order must be one of {', '.join(CONTEXT_OFFSETS)}, not {context_order!r}")
        if resume and init is not None:
            raise UsageFailure("--resume continues the run's own weights: not with --init (to start a new run from "
                               "this one: --init RUN --out NEW)")
        if resume and (preset is not None or from_scratch):
            # the same command line again with --resume (its preset named) continues the run as it was set up
            _tell("warning", f"--resume continues the run in {out_dir} with its own model: "
                             f"{'--preset' if preset is not None else '--from-scratch'} has no effect")
        if context_order not in (None, "rows") and not pixel_context and not resume and init is None:
            raise UsageFailure("--context-order applies to a pixel-context head: give --pixel-context WIDTH too")
        if binary_groups is not None and binary_groups < 0:
            raise UsageFailure(f"--binary-groups must not be negative, not {binary_groups}")
        if binary_groups and residual_posterior:
            raise UsageFailure("--binary-groups does not combine with --residual-posterior (a Gaussian posterior's "
                               "form)")
        if binary_groups and importance_samples not in (None, 1):
            raise UsageFailure("--binary-groups trains on the ELBO: a relaxed binary sample has no probability "
                               "for --importance-samples to weigh")
        if global_latents is not None and global_latents < 0:
            raise UsageFailure(f"--global-latents must not be negative, not {global_latents}")
        if binary_beta is not None and not 0 < binary_beta <= 64:  # layers.MAX_BINARY_BETA (no torch import here)
            raise UsageFailure(f"--binary-beta must be in (0, 64], not {binary_beta}")
        model_options = {key: value for key, value in dict(likelihood=likelihood, channel_coupling=channel_coupling,
                                                           context_order=context_order,
                                                           binary_groups=binary_groups,
                                                           global_latents=global_latents).items()
                         if value is not None}
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageFailure(f"--out {out_dir}: a file, not a folder for the run")
        above = next((parent for parent in out_dir.parents if parent.exists()), None)  # where the folder would be made
        if above is not None and not above.is_dir():
            raise UsageFailure(f"--out {out_dir}: {above} is a file, not a folder")
        if force and name is None:
            raise UsageFailure("--force replaces an installed model of --name's: give --name NAME too")
        if name is not None:
            from vaezip import zoo

            zoo.check_installable(name, force)  # refused now, not after the training
        if "torch" not in sys.modules:
            # Idle OpenMP threads spin by default, burning the cores other work (or our own other threads)
            # need; read once, when torch loads.
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from vaezip.config import get_preset
        from vaezip.train import DEFAULT_INIT, FINE_TUNE_OVERRIDES, Timing, is_user_data, set_threads
        from vaezip.train import train as run_training

        if threads is None and not os.environ.get("OMP_NUM_THREADS"):
            threads = default_threads()
        previous_threads = set_threads(threads) if threads is not None else None
        fine_tune = not resume and init is None and preset is None and not from_scratch and is_user_data(data)
        chosen = get_preset(preset or "cpu")
        overrides = dict(FINE_TUNE_OVERRIDES) if fine_tune else {}
        if init is not None and not resume:  # a trained model's start too: the from-scratch rate undoes it
            overrides["lr"] = FINE_TUNE_OVERRIDES["lr"]
        overrides.update({
            key: value
            for key, value in dict(batch_size=batch_size, lr=lr, crop=crop, decay_steps=decay_steps, seed=seed,
                               checkpoint_every=checkpoint_every, val_every=val_every, kl_warmup_steps=kl_warmup,
                               kl_balance=kl_balance or None, importance_samples=importance_samples,
                               binary_beta=binary_beta,
                               train_only_context=train_only_context or None).items()
            if value is not None
        })
        if resume and steps is None and minutes is None:  # the run's own target (or another sitting as long)
            steps, minutes = _saved_target(out_dir)
        if steps is None and minutes is None:
            steps = 10_000
        time_schedule = minutes is not None and decay_steps is None
        if not time_schedule and decay_steps is None and steps is not None and not resume:
            overrides["decay_steps"] = steps  # a new run plans its decay over its steps (a resumed one keeps its)
        start = DEFAULT_INIT if fine_tune else init
        timing = Timing(
            time_limit=None if minutes is None else minutes * 60,
            time_schedule=time_schedule,
            checkpoint_seconds=CHECKPOINT_SECONDS,
            first_validation_seconds=FIRST_VALIDATION_SECONDS,
            validation_seconds=VALIDATION_SECONDS,
            validate_at_start=start is not None,  # the bound of the model the run starts from, at once
        )
        # The data and the --name are needed again: the run keeps the one, and installs only under the other
        import shlex

        shown_data = f"./{data}" if data.startswith("-") else data  # not taken for an option
        again = ["vaezip", "train", shown_data, "--resume", "--out", str(out_dir), *(["--name", name] if name else [])]
        reporter = RichTrainReporter(out, shlex.join(again), crop_given=crop)
        # the run folder and the folders above it that this command makes, innermost first: none is left empty
        created = [folder for folder in (out_dir, *out_dir.parents) if not folder.exists()]
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
                init=start,
                channels=channels,
                pixel_context=pixel_context,
                residual_posterior=residual_posterior,
                model_options=model_options,
                timing=timing,
                stop_on_signals=True,
            )
        except BrokenPipeError:
            if reporter.write_error is None:
                raise  # its reader went away: 141, quietly
            raise Failure(f"standard output: cannot write ({reporter.write_error.strerror or reporter.write_error}); "
                          f"the run stopped and saved its checkpoint ({shlex.join(again)} continues it)") from None
        except BaseException:
            for folder in created:
                with suppress(OSError):  # not empty (a checkpoint was saved), or gone: as it is
                    folder.rmdir()
            raise
        finally:
            reporter.close()
            if previous_threads is not None:
                set_threads(previous_threads)  # in-process callers (tests) keep their own setting
        if summary["rank"] != 0:
            return  # torchrun's other processes: rank 0 reports, compares and installs
        val = "n/a" if summary["val_bpsp"] is None else f"{summary['val_bpsp']:.4f}"
        out.print(
            f"stopped at step {summary['step']}: validation bound {val} bpsp "
            f"(best {summary['best_val_bpsp']:.4f}); skipped updates: {summary['skipped_nan']} non-finite, "
            f"{summary['skipped_norm']} large-norm; checkpoint {summary['checkpoint']}",
            highlight=False, markup=False,
        )
        from vaezip.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(out_dir)  # what export and install take: the EMA weights as saved
        try:
            comparison, shipped = _compare_after_training(out_dir, checkpoint, summary, init, device)
        except KeyboardInterrupt:
            if name is not None:  # the run is saved; only the check before installing was cut short
                _tell("warning", f"not installed as {name!r}: the comparison was interrupted (vaezip export "
                                 f"{out_dir} --name {name} installs it as it is)")
            raise
        if name is not None:
            worse = comparison.worse_than() if comparison is not None else []
            if worse and not force:
                how = "worse" if worse[0].payload_bpsp < comparison.trained.payload_bpsp else "no smaller, and its " \
                    "bound is higher,"
                raise Failure(f"not installed as {name!r}: it codes the held-out images {how} than "
                              f"{worse[0].name} (--force installs it anyway; the run stays in {out_dir})")
            try:
                _install(checkpoint, name, force,
                         _run_info(checkpoint, out_dir, _comparison_figures(comparison, shipped)))
            except (Failure, ValueError, OSError) as error:  # after the training: say what is left and how to go on
                raise Failure(f"not installed as {name!r}: {_error_message(error)} (the run stays in {out_dir}: "
                              f"vaezip export {out_dir} --name {name} installs it)") from None


def _compare_after_training(run_dir: Path, checkpoint: dict, summary: dict, init: str | None, device: str):
    """The trained model against the shipped default for its mode (and the model it started from) and
    against WebP / JPEG-XL, on the held-out images; printed. Returns (Comparison or None, shipped name)."""
    from vaezip import zoo
    from vaezip.api import LoadedModel, load_model
    from vaezip.checkpoint import model_from_checkpoint
    from vaezip.train import COMPARISON_SIDE, DEFAULT_INIT, compare_on_holdout

    held_out = summary["held_out"]
    if held_out is None or len(held_out) == 0:
        return None, None
    mode = "L" if summary["channels"] == 1 else "RGB"
    others, shipped = [], None
    try:
        shipped = zoo.default_for(mode)
        others.append(load_model(shipped))
    except ValueError as error:  # no shipped model here: compare with the codecs only
        err.print(f"no shipped model to compare with ({error})", highlight=False, markup=False)
    if init is not None and init != DEFAULT_INIT and init != shipped:
        try:
            others.append(load_model(init))
        except ValueError:
            pass  # the start is gone or moved: the shipped model is the comparison that matters
    # A plain name: it goes into the comparison's .vz headers (a run folder's path may be long or odd).
    trained = LoadedModel("trained", model_from_checkpoint(checkpoint), "0" * 64, str(run_dir))
    comparison = compare_on_holdout(trained, others, held_out.images, device=device)
    out.print(f"held-out images, coded for real ({comparison.images} images, centre crops up to "
              f"{COMPARISON_SIDE}x{COMPARISON_SIDE}; models: each one's own stream, every tile by the model (or raw "
              f"where that is smaller), one archive each; codecs: one file per image):")
    width = max(len(_comparison_label(row, shipped, run_dir)) for row in comparison.rows)
    for row in comparison.rows:
        bound = "" if row.bound_bpsp != row.bound_bpsp else f"  (bound {row.bound_bpsp:.4f})"
        out.print(f"  {_comparison_label(row, shipped, run_dir):<{width}}  {row.achieved_bpsp:.4f} bpsp{bound}")
    if comparison.skipped:
        out.print(f"  not available here: {', '.join(comparison.skipped)} (pip install imagecodecs)")
    # What compress makes with it: where the model-free predictor codes every tile for less, the model changes
    # no file, however it compares with the others.
    spared = "" if comparison.default_uses_model else (
        " (the model-free predictor codes every tile of them for less: on such images the model changes no file)")
    out.print(f"vaezip compress with the trained model: {comparison.default_bpsp:.4f} bpsp{spared}")
    mine, worse = comparison.trained.payload_bpsp, comparison.worse_than()
    my_bound = comparison.trained.bound_bpsp
    for row in (row for row in comparison.rows if row.kind == "model"):
        label = _comparison_label(row, shipped)
        # Files of one size: every tile went raw (a few small images), and the bounds tell the models apart.
        tie = (f" (every model's stream the same size, the header that names the model aside: the held-out images "
               f"too few or small for any tile to go through a model; bound {my_bound / row.bound_bpsp - 1:+.2%})"
               ) if mine == row.payload_bpsp else ""
        if row in worse:  # the same test that keeps --name from installing it
            larger = f"{mine / row.payload_bpsp - 1:.2%} larger than" if not tie else "no smaller than"
            err.print(f"WARNING: the trained model codes the held-out images {larger} {label}{tie}: keep using "
                      f"{row.name}, or train longer")
        elif tie:
            out.print(f"the trained model codes the held-out images as small as {label}{tie}")
        else:
            out.print(f"the trained model codes the held-out images {1 - mine / row.payload_bpsp:.2%} smaller "
                      f"than {label}")
    return comparison, shipped


def _saved_target(run_dir: Path) -> tuple[int | None, float | None]:
    """The step target and minutes a run's checkpoint records (None, None where an earlier vaezip saved it: the
    default target then, with a warning)."""
    from vaezip.checkpoint import CHECKPOINT_NAME, load_checkpoint

    if not (Path(run_dir) / CHECKPOINT_NAME).is_file():  # resume's own message says so
        return None, None
    target = load_checkpoint(run_dir).get("target")
    if not isinstance(target, dict) or (target.get("steps") is None and target.get("minutes") is None):
        _tell("warning", f"--resume: {run_dir}'s checkpoint records no step target or time (an earlier vaezip saved "
                         f"it): going on to 10,000 steps (--steps or --minutes sets another)")
        return None, None
    steps, minutes = target.get("steps"), target.get("minutes")
    return (int(steps) if steps is not None else None), (float(minutes) if minutes is not None else None)


def _comparison_label(row, shipped: str | None, run_dir: Path | None = None) -> str:
    if row.kind == "model" and row.name == shipped:
        return f"{row.name} (shipped)"
    if row.kind == "trained" and run_dir is not None:
        return f"{shown(str(run_dir))} (trained)"
    return row.name


def _comparison_figures(comparison, shipped: str | None) -> dict:
    if comparison is None:
        return {}
    figures = {
        "held-out images (centre crops)": f"{comparison.images}, up to {comparison.side}x{comparison.side}",
        "held-out achieved": round(comparison.trained.achieved_bpsp, 4),
        "held-out bound": round(comparison.trained.bound_bpsp, 4),
        "held-out vaezip compress": round(comparison.default_bpsp, 4),
    }
    for row in comparison.rows:
        if row.kind != "trained":
            label = f"{row.name} (shipped)" if row.name == shipped else row.name
            figures[f"held-out {label}"] = round(row.achieved_bpsp, 4)
    return figures


@app.command(name="eval")
def eval_command(
    model: str = typer.Argument(..., help="a run folder, a checkpoint .pt, a .safetensors file or a model name"),
    data: str = typer.Argument(..., help="a folder of images, an .npz file, or a data set name"),
    limit: Optional[int] = typer.Option(None, help="only the first N images"),
    batch_size: int = typer.Option(64, help="images (or tiles) a forward pass"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    tile: Optional[int] = typer.Option(None, help="cut images into tiles as `vaezip compress --tile` does (the "
                                       "bound a file pays); default: whole images"),
    samples: int = typer.Option(1, "--samples", metavar="K", help="also the K-sample importance-weighted bound "
                                "(2, 4, 8 or 16), what `vaezip compress --samples K` pays instead (default 1: the "
                                "ELBO only)"),
):
    """Print the bound (negative ELBO, bits per subpixel) and the KL of each latent group."""
    with user_errors():
        _check_tile(tile)  # usage errors before torch is imported
        _check_device(device)
        for flag, value in (("--limit", limit), ("--batch-size", batch_size)):  # one line, not typer's usage box
            if value is not None and value < 1:
                raise UsageFailure(f"{flag} must be at least 1, not {value}")
        if samples not in (1, *IMPORTANCE_SAMPLES):
            raise UsageFailure(f"--samples must be 1, {', '.join(map(str, IMPORTANCE_SAMPLES))}, not {samples}")
        from vaezip import data as datasets
        from vaezip.api import load_model
        from vaezip.devices import resolve_device
        from vaezip.evaluate import evaluate

        loaded = load_model(model)
        channels = loaded.model.config.image_channels
        images = datasets.load(data, limit=limit, channels=channels)
        converted = list(images.changed)
        if not converted and not images.names:  # a named set or an .npz (a folder's names its changes): one image
            into = "grey repeated into RGB" if channels == 3 else "colour converted to grey"
            converted = [into] if datasets.load(data, limit=1).channels != channels else []
        for change in converted:  # the bound is per subpixel of the images as converted: say so
            _tell("warning", f"{images.name}: {change}: the bound is per subpixel of the images as read "
                             f"({loaded.name} codes {'colour' if channels == 3 else 'grey'} images)")
        target = resolve_device(device)
        if tile is not None:
            from codec.tiling import tile_boxes
            from vaezip.archive import effective_tile

            asked, tile = tile, effective_tile(tile, loaded.model.config.stride)
            if tile != asked:  # as compress cuts them: the bound is of those tiles
                _tell("warning", f"--tile {asked}: {loaded.name} cuts images into tiles of a multiple of its stride "
                                 f"{loaded.model.config.stride}: tiles of {tile}")
            total = sum(len(tile_boxes(image.shape[0], image.shape[1], tile)) for image in images)
        else:
            total = len(images)
        total *= 2 if samples > 1 else 1  # the importance-weighted bound is a second pass
        with Progress(TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as bar:
            task = bar.add_task("eval", total=total)
            result = evaluate(
                loaded.model.to(target),
                images.images,
                batch_size=batch_size,
                device=target,
                tile=tile,
                progress=lambda n: bar.advance(task, n),
                samples=samples,
            )
        cut = f" in {tile}x{tile} tiles" if tile is not None else ""
        table = Table(title=f"{loaded.name} on {images.name}: {result.images} images{cut}")
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
        if result.importance_bpsp is not None:
            from vaezip.config import importance_coding_obstacle

            obstacle = importance_coding_obstacle(loaded.model.config)
            note = (f"what compress --samples {samples} pays instead" if obstacle is None else
                    f"compress --samples cannot code this model: {obstacle}")
            out.print(f"importance-weighted bound, {samples} samples: {result.importance_bpsp:.4f} bits per subpixel "
                      f"({note})", highlight=False)


# ---------------------------------------------------------------------------------------------- coding


def _read_input(path: str) -> bytes:
    """A regular file's bytes (or stdin's for '-'), bounded by vaezip.files.MAX_INPUT_BYTES; a FIFO, device or
    folder is refused unread. Errors do not name the file: the caller's label does, once."""
    from vaezip.files import read_input

    return read_input(path)[0]


def _expanded(inputs: list[str], recursive: bool, suffixes: tuple[str, ...], what: str,
              archive: bool = False, folders: dict | None = None) -> tuple[list[str], int]:
    """With -r, each folder among `inputs` replaced by the files under it that end in `suffixes`
    (files.files_under), each file once however often the inputs reach it; and how many folders could not be
    read, each reported as an error (for an archive, `archive`, one is the command's error: its files would be
    left out; where nothing is left, the command ends there, exit 1). A folder without such files is passed over
    with a warning, unless nothing at all is left. `folders`, where given, gets each file found under a folder
    and the folder it lies in as given (_mirrored)."""
    from vaezip.files import file_identity, files_under

    if not recursive:
        return inputs, 0
    expanded, seen, empty, unread = [], set(), [], []
    for path in inputs:
        found = [path]
        if path != "-" and os.path.isdir(path):
            found, refused = files_under(path, suffixes)
            unread += refused
            if not found and not refused:
                empty.append(path)
        for name in found:
            identity = file_identity(name) if name != "-" else ("stdin",)
            if identity not in seen:
                seen.add(identity)
                expanded.append(name)
                if folders is not None and name != path:
                    folders[name] = _mirrored(path, name)
    if unread and archive:
        folder, reason = unread[0]
        raise Failure(f"{folder}: {reason}: the archive would leave out the files under it; nothing done")
    for folder, reason in unread:
        _tell("error", f"{folder}: {reason}: the files under it are left out")
    if not expanded and not unread:
        raise Failure(f"{', '.join(empty)}: no {what} under {'this folder' if len(empty) == 1 else 'these folders'}")
    for folder in empty:
        _tell("warning", f"{folder}: no {what} under this folder")
    if not expanded:  # every folder unread: nothing to do, the errors said why
        raise typer.Exit(1)
    return expanded, len(unread)


def _each_file_once(inputs: list[str], done: str = "archived once",
                    output_of=None) -> tuple[list[str], list[str]]:
    """The inputs with each file once, where it is first named, and a warning for each time it is named again, by
    its name or another (a link): as -r takes each file once. An archive holding one file's image twice was about
    twice its size, and --rm deleted the file, its size check counting the file as often as it was named.
    `output_of`: where each input has an output of its own (its name, or None), a file is taken once only where it
    is named again with the same output (`compress a.png ./a.png`); under other names (links) it is coded for each,
    into outputs of their own. `done`: what the warning says is done with the file."""
    from vaezip.files import file_identity

    first: dict[tuple, str] = {}
    once, warned = [], []
    for path in inputs:
        identity = file_identity(path) if path != "-" else ("stdin",)
        if output_of is not None:
            target = output_of(path)
            identity += (None if target is None else file_identity(target),)
        if identity in first:
            again = "named again" if first[identity] == path else f"the same file as {first[identity]}"
            if identity[0] == "inode":  # a missing file: its error says so, once
                warned.append(f"{path}: {again}: {done}")
            continue
        first[identity] = path
        once.append(path)
    return once, warned


def _mirrored(folder: str, path: str) -> str:
    """The folder, relative and without '..', that `path` (found under the input folder `folder`) lies in as
    given: photos/2020 for photos/2020/a.vz under photos; a folder given as an absolute path or through '..' as
    its absolute path without the leading separator (/home/me/photos/2020, as zstd's --output-dir-mirror)."""
    given = os.path.normpath(folder)
    if os.path.isabs(given) or given.split(os.sep)[0] == os.pardir:
        given = os.path.splitdrive(os.path.abspath(folder))[1].lstrip(os.sep)
    mirrored = os.path.normpath(os.path.join(given, os.path.relpath(os.path.dirname(path), folder)))
    if os.path.isabs(mirrored) or mirrored.split(os.sep)[0] == os.pardir:  # never outside --dir's folder
        raise Failure(f"{path}: its folder cannot be mirrored under --dir")
    return mirrored


def _without_shared_outputs(inputs: list[str], suffix: str) -> tuple[list[str], int]:
    """With -r: inputs whose outputs beside them would be one file (x.png and x.tif both x.vz) are each an error
    and left out, so that the rest of a tree goes on (without -r, _refuse_clashes refuses them together before
    any work); and how many were left out."""
    from vaezip.files import file_identity

    groups: dict[tuple, tuple[str, list[str]]] = {}
    for path in inputs:
        target = None if path == "-" else _default_output(path, suffix)
        if target is not None:
            groups.setdefault(file_identity(target), (target, []))[1].append(path)
    shared = set()
    for target, sources in groups.values():
        if len(sources) > 1:
            shared.update(sources)
            _tell("error", f"{target}: the output of {_listed(sources)}: all left out (rename all but one)")
    return [path for path in inputs if path not in shared], len(shared)


def _listed(names: list[str]) -> str:
    return f"both {names[0]} and {names[1]}" if len(names) == 2 else f"{', '.join(names[:-1])} and {names[-1]}"


def _stored_name(path: str) -> str:
    """The name an archive keeps for an input: its file name, in UTF-8 (bytes of the name that are not UTF-8,
    which Python holds as lone surrogates, become U+FFFD; the output beside the input keeps the real name)."""
    if path == "-":
        return "stdin.png"
    return os.fsencode(Path(path).name).decode("utf-8", "replace")


def _stdout_or(output: str | None, to_stdout: bool) -> str | None:
    """-o's output, or '-' for -c / --stdout (with -o naming a file: a usage error)."""
    if to_stdout and output not in (None, "-"):
        raise UsageFailure(f"-c writes to stdout: not with -o {output}")
    return "-" if to_stdout else output


# Image formats' suffixes (.vz among them) that -o may not give another format's file: compress writes .vz and
# decompress PNG whatever the name says (_refuse_other_format)
_OTHER_IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".gif", ".bmp", ".tif", ".tiff",
                                   ".ppm", ".pgm", ".pnm", ".pbm", ".jxl", ".avif", ".heic", ".heif", ".jp2", ".qoi",
                                   ".ico", ".tga", ".psd", ".vz"})


def _folder_option(value: str | None, flag: str) -> Path | None:
    """A folder option as a Path; '' (which Path takes for '.', the current folder) is a usage error, as -o '' is."""
    if value == "":
        raise UsageFailure(f"{flag} '' names no folder: give one ('.' for the current folder)")
    return None if value is None else Path(value)


def _refuse_other_format(output: str | None, suffix: str) -> None:
    """A usage error for an -o whose suffix names another image format than `suffix` (.vz for compress, .png for
    decompress): a web server or a tool that goes by the name would misread the file; and for an empty -o."""
    if output == "":
        raise UsageFailure("-o '' names no file: give a file name, or '-' for stdout")
    if output is None or output == "-":
        return
    own = Path(output).suffix.lower()
    if own != suffix and own in _OTHER_IMAGE_SUFFIXES | {".png"}:
        what = "compress writes .vz files" if suffix == ".vz" else "decompress writes PNG files"
        named = Path(output).with_suffix("")
        # out.vz.png -> out.vz, not out.vz.vz
        proposed = named if named.suffix.lower() == suffix else named.with_name(named.name + suffix)
        raise UsageFailure(f"-o {output}: {what}; name it {proposed}")


def _default_output(path: str, suffix: str) -> str | None:
    """The output an input gets without -o (a.png -> a.vz, a.vz -> a.png); None if the path has no file name."""
    try:
        return str(Path(path).with_suffix(suffix))
    except ValueError:  # '..', '/': a folder, refused when read
        return None


def _refuse_clashes(inputs: list[str], outputs: list[tuple[str, str | None]], hint: str) -> None:
    """Before any work: no output may be one of the inputs (by file identity: same path, symlink or hard link),
    and no two inputs may share an output; else one error for the whole command, nothing done. `outputs`
    holds (input, its output) pairs, '-' and None skipped."""
    from vaezip.files import file_identity

    named = {}
    for path in inputs:
        if path != "-" and os.path.lexists(path):  # a missing one fails alone ("no such file"), nothing overwritten
            named.setdefault(file_identity(path), path)
    claimed: dict[tuple, str] = {}
    for source, target in outputs:
        if target is None or target == "-":
            continue
        identity = file_identity(target)
        if identity in named:
            which = "" if named[identity] == target else f" {named[identity]}"
            raise Failure(f"{target}: this output would overwrite the input{which}; nothing done "
                          f"(choose another output name with -o)")
        if identity in claimed:
            raise Failure(f"{target}: the output of both {claimed[identity]} and {source}; nothing done ({hint})")
        claimed.setdefault(identity, source)


def _not_kept_by_format(target: str, format_version: int, what: str, read: list, keep: bool) -> None:
    """The warning that the older format asked for keeps no `what` (and, with --rm, that the inputs stay)."""
    kept_note = f"; {_inputs_kept(read)} (--rm)" if not keep else ""
    _tell("warning", f"{target}: --format {format_version} keeps no {what} (without --format the file keeps "
                     f"it){kept_note}")


def _exists(target: str, derived: bool) -> Failure:
    """An output that exists and no --force. An output named after the input (no -o) is most often a kept
    input of the other direction (photo.png beside photo.vz): say both ways out."""
    also = ", or -o to choose another name" if derived else ""
    return Failure(f"{target} already exists (use --force to overwrite{also})")


def _refuse_target(target: str, force: bool, derived: bool) -> None:
    """An output that is a folder, a FIFO or device (or a link to one: --force does not replace those either),
    or that exists without --force (a dangling symlink included). `derived`: the name came from the input's."""
    from vaezip.files import refuse_special_output

    if Path(target).is_dir():
        raise Failure(f"{target}: is a directory")
    if target.endswith(("/", os.sep)):  # not a folder (above), so not a name a file can have
        raise Failure(f"{target}: ends in '/' but is not a folder: give a file name")
    refuse_special_output(target)
    if os.path.lexists(target) and not force:
        raise _exists(target, derived)


def _check_target(target: str, force: bool, derived: bool = False) -> None:
    """Before the work: _refuse_target's checks, and the output's folder exists."""
    _refuse_target(target, force, derived)
    folder = Path(target).parent
    if os.path.lexists(folder) and not folder.is_dir():
        raise Failure(f"{folder}: not a folder")
    if not folder.is_dir():
        raise Failure(f"{folder}: no such folder")


def _write_output(path: str, data: bytes, force: bool, derived: bool = False, like=None) -> None:
    """Write atomically (temporary file + rename, removed on failure, Ctrl-C and SIGTERM), after _refuse_target's
    checks (again: a file may have appeared since); `like`: the stat of the input it is made from, whose times
    and permission bits it takes (files.atomic_write)."""
    from vaezip.files import atomic_write

    if path == "-":
        _write_stdout(data)
        return
    _refuse_target(path, force, derived)
    try:
        atomic_write(Path(path), data, overwrite=force, like=like)
    except OSError as error:  # Python's words named no file: `[Errno 27] File too large`
        if isinstance(error, (FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)):
            raise
        raise Failure(f"{path}: cannot write it ({error.strerror or str(error) or type(error).__name__})") from None


def _write_stdout(data: bytes) -> None:
    """All of `data` to standard output, or an error: a buffered write that stops part-way (a full disk, a file
    size limit, a reader gone) returns how much it wrote and raises nothing, and the command said it wrote all."""
    if sys.stdout is None:
        raise Failure("standard output is closed")
    stream = sys.stdout.buffer
    view = memoryview(data)
    try:
        while view:
            written = stream.write(view)
            if not written:
                raise OSError(errno.EIO, "nothing written")
            view = view[written:]
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        raise Failure(f"standard output: cannot write all of {len(data):,} bytes "
                      f"({error.strerror or type(error).__name__})") from None


@contextmanager
def _coding_progress(label: str, quiet: bool = False):
    """A progress bar of tiles labelled `label` on a terminal's stderr (none with -q, `quiet`, as zstd's and xz's),
    and the callback that moves it (done, total). Where the coder's kernels compile first meanwhile (a first run:
    numba's cache holds none), the label says so until tiles are done, rather than a bar standing still for ~25 s."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tiles"), TimeElapsedColumn(),
        TimeRemainingColumn(), console=err, transient=True, disable=quiet or not err.is_terminal,
    ) as bar:
        if bar.disable:
            yield lambda done, total: None
            return
        from codec import kernels

        task = bar.add_task(label, total=None)
        kernels.compile_notice = lambda: bar.update(
            task, description=f"{label}: compiling the coder (first run only, ~25 s)")
        try:
            yield lambda done, total: bar.update(task, completed=done, total=total, description=label)
        finally:
            kernels.compile_notice = None


def _say(line: str) -> None:
    """A report line on stderr: names escaped, no rich markup (a file may be called '[red]x.png')."""
    err.print(shown(line), markup=False, highlight=False, soft_wrap=True)


def _report(result, output: str, verified: float | None = None, verbose: bool = False, fast: bool = False) -> None:
    """One line per image (an archive's only with -v), then one for the file (`fast`: compress --fast made it)."""
    if verbose or len(result.images) == 1:
        # A model's stream whose every tile the predictor coded (a small image with --tile or --samples: its first
        # tiles have no bits-back to pay for the model's): `vaezip info` says no model tile too
        no_model_tile = "model" in result.codings and not _needs_model(result.data)
        for image in result.images:
            share = image.payload_bits / image.subpixels
            # No model tile: --fast, or by default where the predictor's own stream was the smaller file.
            predictor_only = image.coding == "model" and (math.isnan(image.without_bitsback_excess_bits)
                                                          or no_model_tile)
            # What the other paths would have cost (the file keeps the smallest); the stream itself among them.
            taken = "predictor" if predictor_only and "predictor" in dict(image.candidate_bytes) else image.coding
            others = "".join(f", {coding} {size} B" for coding, size in image.candidate_bytes if coding != taken)
            if image.coding != "model":
                bound = "no model bound" if math.isnan(image.bound_bpsp) else f"model bound {_bound_of(image)}"
                if image.other_kind:
                    other = "grey" if image.other_kind != "grey" else "colour"
                    bound = f"a {image.other_kind} image, no model bound: {result.model} codes {other} images"
                _say(f"{image.name}: {_described(image)}, coded as {image.coding}: "
                     f"{share:.4f} bpsp ({bound}{others})")
            elif predictor_only:
                bound = "no model bound, " if math.isnan(image.bound_bpsp) else f"model bound {_bound_of(image)}, "
                _say(f"{image.name}: {_described(image)}, predictor (no model tile): payload "
                     f"{share:.4f} bpsp ({bound}{_counted(image.tiles, 'tile')}{others})")
            else:
                _say(f"{image.name}: {_described(image)}, model: bound "
                     f"{image.bound_bpsp:.4f} bpsp, payload {share:.4f} bpsp ({image.tiles_without_bitsback} of "
                     f"{image.tiles} tiles without bits-back: "
                     f"{image.without_bitsback_excess_bits / image.subpixels:+.4f} bpsp against their bound{others})")
            _say_metadata(image)
    check = "" if verified is None else f", verified (decoded and compared) in {verified:.2f} s"
    count = f"{len(result.images)} images, " if len(result.images) > 1 else ""
    versus = _bound_and_ratio(result.achieved_bpsp, result.bound_bpsp, _sampled(result), result.other_kind_images,
                              _ran(result), fast)
    # the model whose bound the line gives; none where no network ran (--fast: `vaezip info` says no model)
    model = f" with model {result.model}" if _ran(result) else ""
    _say(
        f"-> {output}: {count}{len(result.data)} bytes, achieved {result.achieved_bpsp:.4f} bpsp vs {versus}; "
        f"header {result.header_bytes} B) "
        f"in {result.seconds:.2f} s{model}{check}"
    )


def _say_metadata(image) -> None:
    """What of the image's metadata the file keeps, what it leaves out, and what of its file is not metadata that no
    .vz holds (bytes after the image, what Pillow does not read; a line each, where there is any)."""
    from vaezip.metadata import describe, not_metadata

    if image.metadata:
        _say(f"  metadata kept: {describe(image.metadata)}")
    beyond = [entry for entry in image.metadata_unkept if not_metadata(entry)]
    unkept = [entry for entry in image.metadata_unkept if not not_metadata(entry)]
    if unkept:  # what no .vz keeps (with --strip only what is not metadata is named: the user asked)
        _say(f"  metadata left out: {', '.join(unkept)}")
    if beyond:
        _say(f"  not kept (no .vz holds it): {', '.join(beyond)}")


def _bound_of(image) -> str:
    """'2.9191 bpsp', or, projected from a sample of the image's tiles, '~2.9191 bpsp (from 48 of 384 tiles)'."""
    if not image.bound_sample:
        return f"{image.bound_bpsp:.4f} bpsp"
    priced, tiles = image.bound_sample
    return f"~{image.bound_bpsp:.4f} bpsp (from {priced} of {tiles} tiles)"


def _sampled(result) -> bool:
    """Whether some image's bound is projected from a sample of its tiles (the default's early exit)."""
    return any(image.bound_sample for image in result.images)


def _ran(result) -> bool:
    """Whether the network ran for the model's images (not --fast): some image the model could code has a bound."""
    return any(not math.isnan(image.bound_bits) for image in result.images if not image.other_kind)


def _bound_and_ratio(achieved: float, bound: float, sampled: bool = False, other_kind: int = 0,
                     ran: bool = True, fast: bool = True) -> str:
    """'bound B (Rx' for a report line ('bound ~B' where some image's is projected from a sample of its tiles),
    'no bound for the whole file (N images ... classically' where `other_kind` images went classically beside a
    model of the other kind (grey or colour; '(--fast; N images ...' where no network `ran`), or 'no model bound
    (--fast' where no network ran (bound nan; '(no model tile' where --fast was not asked for)."""
    if math.isnan(bound) and other_kind:
        return (f"no bound for the whole file ({'' if ran else '--fast; ' if fast else 'no model tile; '}"
                f"{_counted(other_kind, 'image')} of the kind the model does not code went classically")
    if math.isnan(bound):
        return "no model bound (--fast" if fast else "no model bound (no model tile"
    return f"bound {'~' if sampled else ''}{bound:.4f} ({achieved / bound if bound else float('nan'):.4f}x"


class _Totals:
    """What several files came to, for the one summary line that replaces a line per file (without -v)."""

    def __init__(self):
        import time

        self.files = self.images = self.bytes = self.subpixels = 0
        self.bound_bits = self.seconds = 0.0
        self.sampled = False  # some image's bound projected from a sample of its tiles
        self.models: dict[str, None] = {}
        self.started = time.perf_counter()
        self.workers = 0  # with -j: the summary gives the wall time, not the sum of the files' times

    def _time(self) -> str:
        import time

        if self.workers > 1:
            return f"{time.perf_counter() - self.started:.2f} s (wall, {self.workers} workers)"
        return f"{self.seconds:.2f} s"

    def add_compressed(self, result) -> None:
        self.files += 1
        self.images += len(result.images)
        self.bytes += len(result.data)
        self.subpixels += result.subpixels
        self.bound_bits += result.bound_bpsp * result.subpixels
        self.sampled = self.sampled or _sampled(result)
        self.seconds += result.seconds
        if _ran(result):  # a model whose bound the line counts
            self.models[result.model] = None

    def add_decompressed(self, nbytes: int, images: int, subpixels: int, seconds: float) -> None:
        self.files += 1
        self.images += images
        self.bytes += nbytes
        self.subpixels += subpixels
        self.seconds += seconds

    def compressed_line(self, fast: bool = True) -> str:
        achieved = 8 * self.bytes / max(self.subpixels, 1)
        bound = self.bound_bits / max(self.subpixels, 1)
        versus = _bound_and_ratio(achieved, bound, self.sampled, fast=fast)
        return (f"compressed {_counted(self.files, 'file')} ({_counted(self.images, 'image')}): {self.bytes} bytes, "
                f"achieved {achieved:.4f} bpsp vs {versus}) "
                f"in {self._time()}{' with model ' if self.models else ''}{', '.join(self.models)} "
                f"(-v: a line per file)")

    def tested_line(self) -> str:
        return (f"tested {_counted(self.files, 'file')} ({_counted(self.images, 'image')}, "
                f"{8 * self.bytes / max(self.subpixels, 1):.4f} bpsp): decoded and verified (checksum) in "
                f"{self._time()}, nothing written (-v: a line per file)")

    def decompressed_line(self) -> str:
        return (f"decompressed {_counted(self.files, 'file')} ({_counted(self.images, 'image')}, "
                f"{8 * self.bytes / max(self.subpixels, 1):.4f} bpsp), verified (checksum) in "
                f"{self._time()} (-v: a line per file)")


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 'es' if noun.endswith('ch') else 's'}"


def _verify(data: bytes, images, model, device: str) -> float:
    """Decode `data` in this process and compare every image's pixel checksum with its input's; the seconds it
    took. Any error or difference is a Failure: the caller writes nothing and deletes nothing."""
    import time

    from vaezip.parallel import decoded_checksums

    started = time.perf_counter()
    _compare_decoded(decoded_checksums(data, model, device), images)
    return time.perf_counter() - started


def _compare_decoded(decoded, images) -> None:
    """The decoded images' pixel checksums (or the error that decoding raised) against the inputs'."""
    from vaezip.images import pixel_checksum

    if isinstance(decoded, BaseException):
        reason = str(decoded).strip() or type(decoded).__name__
        raise Failure(f"verification failed: the compressed data does not decode ({reason}); "
                      f"nothing written, input kept")
    if len(decoded) != len(images):
        raise Failure(f"verification failed: {len(decoded)} images decoded, {len(images)} compressed; "
                      f"nothing written, input kept")
    for (name, original), restored in zip(images, decoded):
        if restored != pixel_checksum(original):
            raise Failure(f"verification failed: {name} decodes to other pixels; nothing written, input kept")


def _workers(requested: int, files: int, inputs: list[str], output: str | None, model: str | None):
    """The worker pool for -j N over `files` files, or None to code them here: one file, -j 1, stdin / stdout
    in play (one stream, read or written in order), or a -m model that does not load (each file then reports
    that, as with -j 1)."""
    from vaezip.parallel import Workers, default_jobs

    count = min(default_jobs(requested), files)
    if count <= 1 or "-" in inputs or output == "-":
        return None
    if model is not None:
        from vaezip.models import load_model

        try:
            load_model(model)  # a worker that cannot load it would break the pool
        except Exception:  # noqa: BLE001 - reported file by file by the path without workers
            return None
    return Workers(count, model)


class _ReadAhead:
    """-j N: the files from the current one up to two per worker beyond it, read in this process and handed to
    the workers (`submit(index)` -> what `take(index)` returns); a file whose reading fails is skipped here
    and met again in its turn, where its error is reported in order. Without workers it does nothing."""

    def __init__(self, workers, count: int, submit):
        self.workers, self.count, self.submit = workers, count, submit
        self.submitted = 0
        self.pending: dict[int, tuple] = {}
        self.finished = False  # every file taken and done: close() waits for nothing

    def take(self, index: int):
        while self.workers is not None and self.submitted < min(self.count, index + 1 + 2 * self.workers.count):
            self.submitted += 1
            try:
                self.pending[self.submitted - 1] = self._submitted(self.submitted - 1)
            except Exception:  # noqa: BLE001 - met again in its turn, and reported there
                continue
        return self.pending.pop(index, None)

    def _submitted(self, index: int) -> tuple:
        """submit(index), into a fresh pool where a worker's death broke this one (else the file would be coded in
        this process, where running out of memory ends the whole run)."""
        from concurrent.futures.process import BrokenProcessPool

        if self.workers.broken:
            self.workers.restart()
        try:
            return self.submit(index)
        except BrokenProcessPool:  # broken between the check and the submit
            self.workers.restart()
            return self.submit(index)

    def result(self, index: int, submitted: tuple) -> tuple[tuple, object]:
        """(what was submitted for file `index`, the worker's result). A worker that died (killed, out of memory)
        broke the pool and failed every file in it or queued for it, where -j 1 would have failed none or one:
        the pool is started afresh and each such file tried once more in it; dying again is this file's
        failure."""
        from concurrent.futures import CancelledError
        from concurrent.futures.process import BrokenProcessPool

        try:
            return submitted, submitted[-1].result()
        except (BrokenProcessPool, CancelledError):  # cancelled: queued when another file restarted the pool
            pass
        try:
            submitted = self._submitted(index)  # into a fresh pool: this file's death, or another's
            return submitted, submitted[-1].result()
        except (BrokenProcessPool, CancelledError):
            if self.workers.broken:  # the files after this one start afresh
                self.workers.restart()
            raise Failure("a worker process ended abruptly on this file twice (killed, or out of memory?); try "
                          "fewer --jobs") from None

    def close(self) -> None:
        """Stop the workers; unless every file was done (Ctrl-C, a signal), end the running ones at once."""
        if self.workers is not None:
            self.workers.close(cancel=not self.finished)


def _decompress_here(data: bytes, model: str | None, device: str, quiet: bool = False):
    """One file decoded in this process, with a progress bar (not with -q): (its images, when decoding started)."""
    import time

    from vaezip.api import decompress_images  # torch: only once there is something to decode

    started = time.perf_counter()
    with _coding_progress("decompress", quiet) as progress:
        images = decompress_images(data, model, device=device, progress=progress)
    return images, started


def _needs_model(data: bytes) -> bool:
    """Whether a .vz decodes only with the model it names (some tile coded by it)."""
    from codec.container import read_versioned
    from vaezip.unpack import needs_no_model

    header = read_versioned(data)[1]
    return header.uses_model and not needs_no_model(header)


def _is_checkpoint(model: str) -> bool:
    """Whether `-m model` names a training checkpoint (a .pt, or a run folder holding one), not weights."""
    from vaezip.models import _model_name

    if _model_name(model) is not None:
        return False
    from vaezip.checkpoint import CHECKPOINT_NAME  # torch: loaded already, the model having coded the file

    path = Path(model)
    return (path / CHECKPOINT_NAME).is_file() if path.is_dir() else path.suffix == ".pt"


def _compress_here(images, model: str | None, loaded: list, tile, device: str, checking: bool, samples: int = 1,
                   format_version: int | None = None, fast: bool = False, metadata: bool = True,
                   quiet: bool = False):
    """One file compressed in this process, with a progress bar (not with -q): (result, seconds verifying or
    None)."""
    from vaezip.api import compress_images, load_model
    from vaezip.models import identify_model

    if model is not None and not loaded:
        loaded.append(identify_model(model) if fast else load_model(model))  # fast: no weights, no torch
    chosen = loaded[0] if loaded else None
    with _coding_progress("compress", quiet) as progress:
        result = compress_images(
            images, chosen, tile=tile, device=device, samples=samples, format_version=format_version, fast=fast,
            metadata=metadata, progress=progress,
        )
    return result, (_verify(result.data, images, chosen, device) if checking else None)


def _described(image) -> str:
    """'128x96 RGB' of a compress report's image; '128x96 L 1-bit' of a bilevel one (a grey image whose file keeps its
    bit depth below 8); '128x96 RGB 16-bit (shift:12; its low 4 bits webp)' of a 16-bit one, whose high part's path
    the rest of its line names."""
    described = f"{image.width}x{image.height} {image.mode}"
    if image.grey_bits:
        return f"{described} {image.grey_bits}-bit"
    if not image.depth:
        return described
    from codec.depth import low_bits

    low = f"; its low {_counted(low_bits(image.depth), 'bit')} {image.low_coding}" if image.low_coding else ""
    return f"{described} 16-bit ({image.depth}{low})"


def _larger_than_input(read: list, size: int, stdin_bytes: int = 0) -> str:
    """'photo.jpg (77329 bytes): a JPEG's decoded pixels take more room than the JPEG' where the inputs (an
    archive's: together; `stdin_bytes` read from stdin among them) are smaller than their output of `size` bytes
    (JPEGs, or PNGs squeezed harder than vaezip's own PNG coding); "" elsewhere. Replacing such inputs by their
    output would only cost room, so --rm keeps them."""
    total = sum(stdin_bytes if info is None else info.st_size for _, info in read)
    if not read or total >= size:
        return ""
    jpeg = any(Path(path).suffix.lower() in (".jpg", ".jpeg", ".jpe", ".jfif") for path, _ in read)
    why = ": a JPEG's decoded pixels take more room than the JPEG" if jpeg else ""
    if len(read) == 1:
        return f"{'stdin' if read[0][0] == '-' else read[0][0]} ({total} bytes){why}"
    return f"its {len(read)} inputs ({total} bytes together){why}"


def _named(names, shown: int = 3) -> str:
    """'a.png, b.png and c.png', or 'a.png, b.png, c.png and 4 more'."""
    names = list(names)
    if len(names) <= shown:
        return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown} more"


def _inputs_kept(read: list) -> str:
    return "the inputs are kept" if len(read) > 1 else "the input is kept"


def _same_file_still(path: str, before) -> bool:
    if before is None:  # never read here: nothing to compare, so not deleted
        return False
    try:
        now = os.stat(path)
    except OSError:
        return False
    # ctime too: a rewrite in place of the same size whose mtime was set back still moves it; so does deleting
    # another link to the file (`--rm -j 2` of two hard links kept the second as changed), which leaves fewer links
    return (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) == (
        before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns) and (
        now.st_ctime_ns == before.st_ctime_ns or now.st_nlink < before.st_nlink)


def _check_written_png(target: str, png: bytes, image) -> None:
    """decompress --rm, before the .vz goes: the file holds the PNG written, and that PNG holds the image exactly
    (its pixel checksum; a palette Pillow cuts is extended, so such a PNG is a near copy, not the image)."""
    from vaezip.images import open_image, pixel_checksum

    on_disk = Path(target).read_bytes()
    if on_disk != png:
        raise Failure(f"{target} reads back different from what was written (disk error?); input kept")
    if pixel_checksum(open_image(on_disk)) != pixel_checksum(image):
        raise Failure(f"{target}: a PNG cannot hold this image exactly as the .vz does (its palette or "
                      f"transparency); input kept")


def _remove_inputs(read: list[tuple[str, object]], target: str, done: str = "compressed",
                   plural: bool = False) -> None:
    """--rm, after the output is written and verified: delete each input once, unless it changed meanwhile or is
    a symbolic link (deleting the link would leave its target, and /dev/stdin is one)."""
    from vaezip.files import file_identity

    unique = {}
    for path, info in read:
        if path != "-":
            unique.setdefault(file_identity(path), (path, info))
    for path, info in unique.values():
        if os.path.islink(path):
            raise Failure(f"{path} is a symbolic link: not deleted, nor what it points to ({target} "
                          f"{'are' if plural else 'is'} written and verified)")
        if not _same_file_still(path, info):
            raise Failure(f"{path} changed while it was {done}: kept ({target} {'hold' if plural else 'holds'} the "
                          f"version read)")
    for path, _ in unique.values():
        try:
            Path(path).unlink()
        except OSError as error:
            raise Failure(f"{path}: not deleted ({error.strerror or type(error).__name__}); {target} "
                          f"{'are' if plural else 'is'} written and verified") from None


@app.command()
def compress(
    inputs: list[str] = typer.Argument(..., help="images (PNG, JPEG, WebP, BMP, TIFF...); '-' reads stdin"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="output file; several inputs -> one archive; '-' for stdout"),
    to_stdout: bool = typer.Option(False, "--stdout", "-c", help="write to stdout (as gzip -c): the same as -o -"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model name, run folder or weights file (default: by image mode)"),
    force: bool = typer.Option(False, "--force", "-f", help="overwrite existing outputs (never an input)"),
    keep: bool = typer.Option(True, "--keep/--rm", help="keep (default) or delete the inputs after success; --rm "
                              "first decodes the output in process and checks it against the input (as --verify), "
                              "and keeps, with a warning, inputs smaller than their output (a JPEG, say; an "
                              "archive's together) or whose metadata no .vz keeps (a TIFF's Artist tag; all of it "
                              "with an older --format; --strip lets it go)"),
    verify: bool = typer.Option(False, "--verify", help="decode the output in process and compare it with the input "
                                "before writing it (implied by --rm); the report gives the time it took"),
    tile: Optional[int] = typer.Option(None, help="tile side in pixels of the model's stream (32 unless "
                                       "given; 256 with --fast). Given, it turns off the default's predictor "
                                       "stream in tiles of 256 and its early check: on photographs ~1 % larger"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no report"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="a report line for every file and image (default: "
                                 "one summary line for several files, one line for an archive)"),
    jobs_at_once: int = typer.Option(1, "--jobs", "-j", help="code this many files at once, each in a worker "
                                     "process (0: one per core); the files are byte for byte those of -j 1"),
    samples: int = typer.Option(1, "--samples", help="posterior samples per tile: 2, 4, 8 or 16 code with "
                                "importance-weighted (Monte-Carlo) bits-back, paying the K-sample bound instead of "
                                "the ELBO for K times the model's work each way (format 4 or later: vaezip before it "
                                "cannot read such files)"),
    format_version: Optional[int] = typer.Option(None, "--format", metavar="N", help="write an older format for an "
                                                 "older vaezip to read: 22 (a 1-, 2- or 4-bit grey image "
                                                 "decompresses as 8-bit grey), 21 (refined sections that read no other "
                                                 "channel), 20 (no refined sections), 19 (no photograph "
                                                 "sections), 18 (no small-image sections), 17 (no 16-bit image), 16 "
                                                 "(no metadata), 15 (the staged cascade's predictor tiles in one "
                                                 "chain, not in sections), 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 3 or 2 "
                                                 "(JSON header, the model's stream for every image, no classical "
                                                 "coding); docs/FORMAT.md's Versioning says what each holds and which "
                                                 "vaezip reads it; before 17 no file keeps metadata, before 18 none "
                                                 "holds a 16-bit image. Default (or 23): the oldest format that holds "
                                                 "the file (16 where the predictor codes every tile, in sections "
                                                 "decoded side by side; 17 where it keeps an image's metadata; 18 "
                                                 "where it holds a 16-bit image; 19 where small images' sections are "
                                                 "coded by the predictor's small-image profile; 22 where a "
                                                 "photograph's sections, and those of its stream, are coded by its "
                                                 "photograph profile, refined bit by bit; 23 where a grey image "
                                                 "keeps a bit depth below 8, a bilevel scan's or a 4-bit PNG's)"),
    fast: bool = typer.Option(False, "--fast", help="run no network: every tile by the model-free predictor (or "
                              "the smaller classical coding); much faster where the model would run (small images, "
                              "graphics); on photographs usually the default's very file in about the same time "
                              "(larger on thumbnails); the file decodes without the model"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="a folder among the inputs stands for the "
                                   "PNG, GIF, BMP, TIFF, WebP and PNM images under it (not JPEGs, hidden files or "
                                   "links), each to its own .vz beside it, or all into one archive with -o"),
    strip: bool = typer.Option(False, "--strip", help="keep no metadata (by default a file keeps the colour "
                               "profile, EXIF, XMP, and a PNG's text and other ancillary chunks, and decompress "
                               "writes them back; the pixels are exact either way)"),
):
    """Compress images to .vz (one file each, or one archive with -o)."""
    from vaezip.files import (RECURSIVE_IMAGE_SUFFIXES, InputError, check_input, file_identity, read_input,
                              signals_as_exceptions)

    with user_errors(), signals_as_exceptions():
        output = _stdout_or(output, to_stdout)
        _check_tile(tile)
        _check_device(device)
        if jobs_at_once < 0:
            raise UsageFailure(f"--jobs must be 0 (one per core) or more, not {jobs_at_once}")
        if samples not in (1, *IMPORTANCE_SAMPLES):
            raise UsageFailure(f"--samples must be 1, {', '.join(map(str, IMPORTANCE_SAMPLES))}, not {samples}")
        from codec.container import (ACROSS_VERSION, BITS_VERSION, DEPTH_VERSION, METADATA_VERSION, OLDER_FORMATS,
                                     PHOTO_VERSION, REFINED_VERSION, SECTIONS_VERSION, SMALL_VERSION)
        from vaezip.archive import DEFAULT_CODING_FORMATS

        newest = (SECTIONS_VERSION, METADATA_VERSION, DEPTH_VERSION, SMALL_VERSION, PHOTO_VERSION, REFINED_VERSION,
                  ACROSS_VERSION, BITS_VERSION)
        if format_version not in (None, *OLDER_FORMATS, *newest):
            known = f"{', '.join(map(str, OLDER_FORMATS + newest[:-1]))} or {BITS_VERSION}"
            raise UsageFailure(f"--format must be {known} (without it: the oldest format that holds the file), "
                               f"not {format_version}")
        # the newest (what compress writes without --format; archive.encode_archive reads it so) and the default's
        if format_version not in (None, *newest, *DEFAULT_CODING_FORMATS) \
                and samples != 1:
            raise UsageFailure(f"--samples {samples} writes format 4 or later: not with --format {format_version}")
        if fast and samples != 1:
            raise UsageFailure(f"--fast runs no network: not with --samples {samples}")
        if fast and format_version == 2:
            raise UsageFailure("--fast runs no network: not with --format 2 (every image through the model)")
        _check_stdin_once(inputs)
        if output == "-" and not keep and any(path != "-" for path in inputs):
            # as gzip -c: what a pipe did with the bytes is unknown, so the inputs stay (stdin is never deleted)
            raise UsageFailure("--rm deletes inputs only once their output file reads back as written: not with "
                               "-o - or -c (stdout)")
        inputs, unread = _expanded(inputs, recursive, RECURSIVE_IMAGE_SUFFIXES,
                                   "PNG, GIF, BMP, TIFF, WebP or PNM image", archive=output is not None)
        named_again: list[str] = []  # said once the refusals below have passed: a refused command says only why
        if output is not None:
            inputs, named_again = _each_file_once(inputs)
        else:  # one output each: `compress a.png a.png` was refused as two inputs of one output; taken once
            inputs, named_again = _each_file_once(inputs, "compressed once",
                                                  lambda path: None if path == "-" else _default_output(path, ".vz"))
        _refuse_terminal_input(inputs, "image data")
        from codec.header import MAX_IMAGES  # numpy, no torch

        if output is not None and len(inputs) > MAX_IMAGES:
            raise Failure(f"{len(inputs)} images, more than {MAX_IMAGES} in one archive: compress them into several "
                          f"archives")
        if recursive and output is None:
            inputs, shared = _without_shared_outputs(inputs, ".vz")
            unread += shared
        if output is None:  # as gzip does with a .gz: one .vz in `compress *` stopped every other file
            already = [path for path in inputs if path != "-" and path.lower().endswith(".vz")
                       and os.path.lexists(path) and not os.path.isdir(path)]  # a missing one: "no such file"
            for path in already:
                _tell("error", f"{path}: already a .vz file; left as it is (vaezip decompress it)")
            kept = {file_identity(path) for path in already}
            inputs = [path for path in inputs if path not in already]
            for path in list(inputs):  # never an output over one of them, --force or not
                target = None if path == "-" else _default_output(path, ".vz")
                if target is not None and file_identity(target) in kept:
                    _tell("error", f"{path}: its output {target} is an input of this command, left as it is; "
                                   f"nothing done (choose another output name with -o)")
                    inputs.remove(path)
                    unread += 1
            unread += len(already)
            if not inputs:
                _finish(unread, unread)
        if output is None and inputs == ["-"]:
            output = "-"
        if output == "-" or (output is None and "-" in inputs):  # stdin's own file goes to stdout, as decompress's
            _refuse_terminal_output("compressed data")
        if output is not None:
            jobs = [(inputs, output)]
            pairs = [(inputs[0], output)]  # one archive of all the inputs
        else:
            jobs = [([path], "-" if path == "-" else _default_output(path, ".vz")) for path in inputs]
            pairs = [(paths[0], target) for paths, target in jobs]
        _refuse_clashes(inputs, pairs, "compress them into one archive with -o, or rename one")
        _refuse_other_format(output, ".vz")
        _tell_each("warning", [] if quiet else named_again)

        stdin_bytes = [0]  # what was read from stdin (read once a command), for _larger_than_input

        def read_images(paths: list[str], target: str | None):
            for path in paths:  # an input's own fault first (/dev/zero, not its output /dev/zero.vz)
                try:
                    if path != "-":
                        check_input(path)
                except InputError as error:
                    raise Failure(f"{path}: {error}") from None
            if target is not None and target != "-":
                _check_target(target, force, derived=output is None)
            # Only now the heavy imports (torch): a refusal above costs nothing.
            from vaezip.errors import ImageError
            from vaezip.images import open_image

            images, read, said = [], [], []
            for path in paths:
                try:
                    data, info = read_input(path)
                    if path == "-":
                        stdin_bytes[0] = len(data)
                    with _warnings_of(path) as told:
                        images.append((_stored_name(path), open_image(data)))
                    said += told
                    if path != "-" and images[-1][0] != Path(path).name:  # `decompress --dir` writes that name
                        said.append(f"{path}: its name is not UTF-8: the file stores it as {images[-1][0]}")
                except (ImageError, InputError) as error:  # what Pillow warned of on the way: this line says enough
                    raise Failure(f"{path}: {error}") from None
                read.append((path, info))
            if target is None:
                raise Failure(f"{paths[0]}: no file name to derive an output name from (use -o)")
            return images, read, said

        checking = verify or not keep
        warn_checkpoint = model is not None and not fast and not quiet  # and -m a checkpoint: asked below
        workers = _workers(jobs_at_once, len(jobs), inputs, output, model)

        def submit(index: int):
            images, read, said = read_images(*jobs[index])
            options = dict(tile=tile, device=device, samples=samples, format_version=format_version, fast=fast,
                           metadata=not strip)
            return images, read, said, workers.compress(images, options, checking)

        ahead = _ReadAhead(workers, len(jobs), submit)
        written: set[tuple] = set()  # what this run wrote
        loaded = []  # the model, loaded once for every file (and for the verifying decode)
        failures = unread  # what -r left out (folders it could not read, inputs sharing an output): reported
        totals = _Totals()
        totals.workers = workers.count if workers is not None else 0
        each = verbose or len(jobs) == 1
        warned_tile = False
        try:
            for index, (paths, target) in enumerate(jobs):
                with user_errors_counted(paths[0] if len(paths) == 1 else target) as failed:
                    submitted = ahead.take(index)
                    if submitted is not None:
                        _tell_each("warning", [] if quiet else submitted[2])
                        (images, read, _, _), (result, decoded, seconds) = ahead.result(index, submitted)
                        if checking:
                            _compare_decoded(decoded, images)
                        verified = seconds
                    else:
                        images, read, said = read_images(paths, target)
                        _tell_each("warning", [] if quiet else said)
                        result, verified = _compress_here(images, model, loaded, tile, device, checking, samples,
                                                          format_version, fast, not strip, quiet)
                    # A later input never replaces an output this run wrote (Photo.png and photo.gif on a file
                    # system that folds case both make Photo.vz), as decompress's `written`.
                    if target != "-" and file_identity(target) in written:
                        raise Failure(f"{target}: already written by this run from another input; nothing written")
                    # One input's file takes its times and permissions, as gzip's; an archive of several, its own.
                    _write_output(target, result.data, force, derived=output is None,
                                  like=read[0][1] if len(read) == 1 else None)
                    if target != "-":
                        written.add(file_identity(target))
                    if verified is not None and target != "-" and Path(target).read_bytes() != result.data:
                        raise Failure(f"{target} reads back different from what was written and verified (disk "
                                      f"error?); input kept")
                    if not quiet and each:
                        _report(result, target, verified, verbose, fast)
                    if tile is not None and result.tile not in (None, tile) and "model" in result.codings and \
                            not quiet and not warned_tile:  # (a file of classical codings cut no tile)
                        warned_tile = True  # once a command, as eval's
                        _tell("warning", f"--tile {tile}: tiles are a multiple of {result.model}'s stride: tiles "
                                         f"of {result.tile}")
                    if warn_checkpoint and _needs_model(result.data) and _is_checkpoint(model):
                        warn_checkpoint = False  # once a command
                        _tell("warning", f"-m {model}: a training checkpoint; a file its model codes decodes only "
                                         f"with this very checkpoint, which the run's next save replaces: export "
                                         f"its weights (vaezip export {model} W.safetensors --name NAME, or install "
                                         f"them without W) and compress with those")
                    # Only --format 16 or older leaves metadata out unasked: --rm then keeps the inputs that hold it
                    left_out = [] if strip else [image for image in result.images if image.metadata_left_out]
                    if left_out and not quiet:
                        what = (f"{left_out[0].name}'s {', '.join(left_out[0].metadata_left_out)}"
                                if len(left_out) == 1 else f"the metadata of {len(left_out)} images")
                        _not_kept_by_format(target, format_version, f"metadata: {what} left out", read, keep)
                    # Likewise a grey image's bit depth below 8 (a bilevel scan's): written back as 8-bit grey
                    shallow = [image for image in result.images if image.grey_bits_left_out]
                    if shallow and not quiet:
                        what = (f"{shallow[0].name} is {shallow[0].grey_bits_left_out}-bit grey"
                                if len(shallow) == 1 else f"{len(shallow)} images are grey of fewer than 8 bits")
                        _not_kept_by_format(target, format_version, f"bit depth below 8: {what}, decompressed as "
                                                                    f"8-bit grey", read, keep)
                    # Information no .vz keeps (a TIFF's Artist and Copyright tags): --rm would lose it for good,
                    # unless --strip (what holds nothing of the image's own, such as iDOT, does not count); bytes
                    # after the image in its file (an appended archive, a motion photo's video) even with --strip
                    from vaezip.metadata import loses_information, not_metadata

                    unkept = [(image.name, lost) for image in result.images if (lost := [
                        entry for entry in image.metadata_unkept
                        if loses_information(entry) and (not strip or not_metadata(entry))])]
                    if unkept and not keep and not quiet:
                        metadata_only = not any(not_metadata(entry) for _, lost in unkept for entry in lost)
                        what = (f"{unkept[0][0]}'s {', '.join(unkept[0][1])}" if len(unkept) == 1
                                else f"metadata of {len(unkept)} images" if metadata_only
                                else f"what the files of {_named(name for name, _ in unkept)} hold besides the "
                                     f"pixels read (-v names it)")
                        hint = "; --strip drops the metadata and lets --rm delete it" if metadata_only else ""
                        _tell("warning", f"{target} cannot keep {what}; {_inputs_kept(read)} (--rm{hint})")
                    grown = _larger_than_input(read, len(result.data), stdin_bytes[0])
                    if grown and not quiet:
                        kept_note = f"; {_inputs_kept(read)} (--rm)" if not keep else ""
                        _tell("warning", f"{target} ({len(result.data)} bytes) is larger than {grown}{kept_note}")
                    if not keep and not grown and not left_out and not unkept and not shallow:
                        _remove_inputs(read, target)
                    totals.add_compressed(result)
                failures += failed()
            ahead.finished = True
        finally:
            ahead.close()
        if not quiet and not each and totals.files:
            _say(totals.compressed_line(fast))
        _finish(failures, len(jobs) + unread)


@contextmanager
def user_errors_counted(label: str | None = None):
    """Like user_errors, but records the failure and goes on with the next file; the message names `label`
    (the file concerned) so that a run over several files says which ones failed."""
    state = {"failed": 0}
    try:
        with user_errors():
            try:
                yield lambda: state["failed"]
            except _user_error_types() as error:
                if isinstance(error, BrokenPipeError):  # the reader went away: no file of the rest can reach it
                    raise
                message = _error_message(error)
                if label is None or message.startswith(f"{label}:") or message.startswith(f"{label} "):
                    raise
                # The archive names an image by its base name: show the path the user gave instead, once.
                base = Path(label).name
                if base and message.startswith(f"{base}:"):
                    message = message[len(base) + 1 :].lstrip()
                raise Failure(f"{label}: {message}") from None
    except typer.Exit as stop:
        if stop.exit_code >= 128:  # interrupted or terminated: stop here, do not go on with the next file
            raise
        state["failed"] = 1


def _finish(failures: int, total: int) -> None:
    if failures:
        if total > 1:
            err.print(f"vaezip: {total - failures} of {total} succeeded, {failures} failed")
        raise typer.Exit(1)


def _image_count(data: bytes) -> int | None:
    """How many images a .vz holds, from its header alone (no model); None if the header does not parse (the
    decoder then says why)."""
    from codec.container import read_versioned
    from codec.depth import image_count

    try:
        return image_count(read_versioned(data)[1].images)
    except Exception:  # noqa: BLE001 - any damage is the decoder's to report, with its own message
        return None


@app.command()
def decompress(
    inputs: list[str] = typer.Argument(..., help=".vz files; '-' reads stdin"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="output PNG (single-image files); '-' for stdout"),
    to_stdout: bool = typer.Option(False, "--stdout", "-c", help="write to stdout (as gzip -c): the same as -o -"),
    directory: Optional[str] = typer.Option(None, "--dir", "-d", help="folder for the images (archives); with -r "
                                             "each .vz's folder as given is made under it (photos/2020/a.vz, made "
                                             "from img.png: DIR/photos/2020/img.png, the name it stores)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="override the model named in the file"),
    force: bool = typer.Option(False, "--force", "-f", help="overwrite existing outputs (never an input)"),
    keep: bool = typer.Option(True, "--keep/--rm", help="keep (default) or delete each .vz once its images are "
                              "written and read back as written"),
    device: str = typer.Option("auto", help="auto | cpu | cuda (format-1 files: default the device class that encoded)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no report"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="a report line for every file, naming every image "
                                 "written (default: one summary line for several files)"),
    jobs_at_once: int = typer.Option(1, "--jobs", "-j", help="decode this many files at once, each in a worker "
                                     "process (0: one per core)"),
    test: bool = typer.Option(False, "--test", "-t", help="decode each file and check its images against its "
                              "checksum, writing nothing (as gzip -t); exit 1 if any fails"),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="a folder among the inputs stands for the .vz "
                                   "files under it (not hidden files or links)"),
):
    """Restore the exact images from .vz files (as PNG, with the metadata their files kept)."""
    import time

    from vaezip.files import check_input, file_identity, read_input, signals_as_exceptions
    from vaezip.images import png_bytes
    from vaezip.metadata import METADATA, image_chunks

    with user_errors(), signals_as_exceptions():
        output = _stdout_or(output, to_stdout)
        directory = _folder_option(directory, "--dir")
        _check_device(device)
        _check_stdin_once(inputs)
        if jobs_at_once < 0:
            raise UsageFailure(f"--jobs must be 0 (one per core) or more, not {jobs_at_once}")
        if test and (output is not None or directory is not None or force or not keep):
            raise UsageFailure("--test writes nothing: not with -o (or -c), --dir, --force or --rm")
        if output == "-" and not keep and any(path != "-" for path in inputs):
            raise UsageFailure("--rm deletes inputs only once their output files read back as written: not with "
                               "-o - or -c (stdout)")
        # --dir with -r keeps the tree: photos/2020/a.vz's images go to DIR/photos/2020/ (as zstd --output-dir-mirror)
        subfolders: dict[str, str] = {}
        inputs, unread = _expanded(inputs, recursive, (".vz",), ".vz file", folders=subfolders)
        _refuse_terminal_input(inputs, "compressed data")
        if recursive and output is None and directory is None and not test:
            inputs, shared = _without_shared_outputs(inputs, ".png")
            unread += shared
        if output is not None and (len(inputs) > 1 or directory is not None):
            raise UsageFailure("-o (or -c) takes one single-image input and no --dir")
        if directory is not None and os.path.lexists(directory) and not directory.is_dir():
            raise Failure(f"{directory}: not a folder")
        if not test and (output == "-" or (output is None and directory is None and "-" in inputs)):
            _refuse_terminal_output("image data")
        named_again: list[str] = []  # said once the refusals below have passed
        if test:
            planned = []
        elif output is not None:
            planned = [(inputs[0], output)]
        elif directory is None:
            # `decompress a.vz a.vz` was refused as two inputs of one output: the file is taken once
            inputs, named_again = _each_file_once(inputs, "decompressed once",
                                                  lambda path: None if path == "-" else _default_output(path, ".png"))
            planned = [(path, "-" if path == "-" else _default_output(path, ".png")) for path in inputs]
        else:
            planned = []  # the stored names: checked once decoded
        _refuse_clashes(inputs, planned, "decompress them one at a time with -o")
        _refuse_other_format(output, ".png")
        _tell_each("warning", [] if quiet else named_again)

        inputs_named = {file_identity(path) for path in inputs if path != "-"}
        written: set[tuple] = set()  # what this run wrote: a later input never replaces it
        failures = unread  # what -r left out (folders it could not read, inputs sharing an output): reported
        totals = _Totals()
        each = verbose or len(inputs) == 1
        derived = output is None and directory is None and not test  # output names made from the input's

        # Each input's stat when read (by its place among the inputs: one given twice is read twice): --rm keeps
        # one that changed since, and the outputs take its times and permissions
        read_as: dict[int, object] = {}

        def read_file(index: int) -> bytes:
            path = inputs[index]
            if path != "-":
                check_input(path)  # an input's own fault first
            if output is not None and output != "-":
                _check_target(output, force)  # before decoding: a missing folder is no reason to decode
            data, read_as[index] = read_input(path)
            count = _image_count(data)
            if output is not None and count is not None and count > 1:  # known before seconds of decoding
                raise Failure(f"{path} holds {count} images: use --dir")
            default = _default_output(path, ".png") if derived and path != "-" else None
            if default and not force and os.path.lexists(default) and count == 1:
                # The usual clash (photo.png kept beside photo.vz) is known before seconds of decoding.
                raise _exists(default, derived=True)
            return data

        workers = _workers(jobs_at_once, len(inputs), inputs, output, model)
        totals.workers = workers.count if workers is not None else 0

        def submit(index: int):
            data = read_file(index)
            return data, workers.decompress(data, device)

        def write_images(index: int, path: str, images: list) -> list[str]:
            """The decoded images of input `index` written (-o, --dir or beside it) and, with --rm, the input
            deleted; the outputs' names."""
            if output is not None and len(images) > 1:
                raise Failure(f"{path} holds {len(images)} images: use --dir")
            renamed = []  # --dir names numbered because an earlier image has the name
            if output is not None:
                targets = [output]
            elif directory is not None:
                names = png_file_names([name for name, _ in images])
                folder = directory / subfolders.get(path, "")
                targets = [str(folder / name) for name in names]
                renamed = [name for name, (stored, _) in zip(names, images) if name != png_file_name(stored)]
            elif len(images) == 1 and path != "-":
                targets = [_default_output(path, ".png")]
            elif len(images) == 1:
                targets = ["-"]
            else:
                raise Failure(f"{path} holds {len(images)} images: use --dir")
            for target in targets:
                if target == "-":
                    continue
                identity = file_identity(target)
                if identity in inputs_named:
                    raise Failure(f"{target}: this output would overwrite an input; nothing written")
                if identity in written:
                    raise Failure(f"{target}: already written by this run from another input; nothing written")
                _refuse_target(target, force, derived)
            made_folders = []  # those this input's images made: removed again where a failure leaves them empty
            if directory is not None:
                missing = folder
                while not os.path.lexists(missing) and missing != missing.parent:
                    made_folders.append(missing)
                    missing = missing.parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as error:
                    raise Failure(f"{folder}: cannot make this folder ({error.strerror or type(error).__name__})") \
                        from None
            # An archive's images written so far where no file was: a failure on a later one removes them (one
            # that replaced a file with --force stays: the file it replaced is gone either way).
            made, replaced = [], 0
            try:
                for target, (_, image) in zip(targets, images):
                    png = png_bytes(image)
                    new = target != "-" and not os.path.lexists(target)
                    _write_output(target, png, force, derived, like=read_as.get(index))  # the .vz's times, as gunzip
                    if new:
                        made.append(target)
                    else:
                        replaced += 1
                    if target != "-":
                        written.add(file_identity(target))
                    if not keep and target != "-":
                        _check_written_png(target, png, image)
            except BaseException as error:
                if len(targets) > 1:
                    for target in made:
                        written.discard(file_identity(target))
                        with suppress(OSError):
                            os.unlink(target)
                for made_folder in made_folders:  # innermost first; one that holds anything stays
                    with suppress(OSError):
                        made_folder.rmdir()
                if len(targets) > 1 and isinstance(error, (Failure, ValueError, OSError)) and (made or replaced):
                    # Said: the archive's images before the failing one were written, then removed
                    said = [f"the {len(made)} of its images written before it removed"] if made else []
                    said += [f"{replaced} written over files (--force) stay"] if replaced else []
                    raise Failure(f"{_error_message(error)} ({'; '.join(said)})") from None
                raise
            # A chunk that does not fit its image (a colour profile of another colour space) goes into no PNG;
            # compress never stores one, so its file was made otherwise: said, and --rm keeps that file.
            unfit = [(name, image_chunks(image)[1]) for name, image in images if METADATA in image.info]
            unfit = [(name, left_out) for name, left_out in unfit if left_out]
            if unfit and not quiet:
                kept_note = "; the input is kept (--rm)" if not keep and path != "-" else ""
                _tell("warning", f"{path}: {unfit[0][0]}'s {', '.join(unfit[0][1])}: left out of its PNG"
                                 f"{f' (and metadata of {len(unfit) - 1} more images)' if len(unfit) > 1 else ''}"
                                 f"{kept_note}")
            if not keep and path != "-" and not unfit:
                where = targets[0] if len(targets) == 1 else f"{len(targets)} images in {folder}"
                _remove_inputs([(path, read_as.pop(index))], where, "decompressed", len(targets) > 1)
            if renamed and not quiet:
                _say(f"{path}: {_counted(len(renamed), 'image')} {'shares' if len(renamed) == 1 else 'share'} a "
                     f"name with an earlier one, written as "
                     f"{', '.join(renamed[:3])}{', ...' if len(renamed) > 3 else ''}")
            return targets

        ahead = _ReadAhead(workers, len(inputs), submit)
        try:
            for index, path in enumerate(inputs):
                with user_errors_counted(path) as failed:
                    submitted = ahead.take(index)
                    if submitted is not None:
                        (data, _), (images, decoding) = ahead.result(index, submitted)
                        started = time.perf_counter() - decoding  # the worker's time, not the queue's
                    else:
                        data = read_file(index)
                        images, started = _decompress_here(data, model, device, quiet)
                    # --test: decoded and checked against the file's checksum, nothing to write
                    targets = [] if test else write_images(index, path, images)
                    subpixels = sum(len(image.getbands()) * image.width * image.height for _, image in images)
                    seconds = time.perf_counter() - started
                    totals.add_decompressed(len(data), len(images), subpixels, seconds)
                    if not quiet and each and test:
                        _say(f"{path}: {_counted(len(images), 'image')}, {8 * len(data) / max(subpixels, 1):.4f} "
                             f"bpsp, OK: decoded and verified (checksum) in {seconds:.2f} s")
                    elif not quiet and each:
                        shown_targets = (", ".join(targets) if verbose or len(targets) == 1
                                         else f"{len(targets)} files in {directory} (-v: their names)")
                        _say(
                            f"{path}: {_counted(len(images), 'image')}, {8 * len(data) / max(subpixels, 1):.4f} bpsp, "
                            f"verified (checksum) in {seconds:.2f} s -> {shown_targets}"
                        )
                failures += failed()
            ahead.finished = True
        finally:
            ahead.close()
        if not quiet and not each and totals.files:
            _say(totals.tested_line() if test else totals.decompressed_line())
        _finish(failures, len(inputs) + unread)


@app.command()
def info(inputs: list[str] = typer.Argument(..., help=".vz files")):
    """Show what a .vz file holds (without decoding it)."""
    from codec.container import read_versioned
    from codec.depth import LOW, low_bits
    from vaezip.images import SUBPIXELS_PER_PIXEL

    def say(line: str) -> None:  # names and the model name come from the header: escaped, no markup
        try:
            out.print(shown(line), markup=False, highlight=False, soft_wrap=True)
        except BrokenPipeError:  # its reader went away (`| head`): user_errors ends the run quietly
            raise
        except OSError as error:  # a full disk: the output's fault, not the file's
            raise Failure(f"standard output: cannot write ({error.strerror or type(error).__name__})") from None

    from vaezip.api import file_info  # torch-free
    with user_errors():  # as compress and decompress: '-' waited for typed binary data
        _refuse_terminal_input(inputs, "compressed data")
    failures = 0
    for path in inputs:
        with user_errors_counted(path) as failed:
            _require_stdout()
            data = _read_input(path)
            version, header, words = read_versioned(data)
            coder = header.coder
            described = f"format {version} ({file_info(data).inference})"  # what its content needs, too
            if coder is None:  # a header that names no model: no image in the file is coded by one
                coding = "no model"
            else:
                kinds = {}
                for kind, n in coder.schedule:
                    kinds[kind] = kinds.get(kind, 0) + n
                from vaezip.unpack import needs_no_model  # torch-free

                needed = " (not needed to decode: no tile went through it)" if needs_no_model(header) else ""
                coding = (
                    f"model {header.model_name} (sha256 {header.model_sha256}...){needed}; tile {coder.tile}, "
                    f"{_counted(sum(kinds.values()), 'tile')} in {_counted(len(coder.schedule), 'batch')} "
                    f"({', '.join(f'{n} {k}' for k, n in kinds.items()) or 'no tiles'}); "
                    f"made with constriction {coder.constriction}"
                    + "".join(f", {k} {v}" for k, v in sorted(coder.extra.items()))
                )
            # Split as compress reports it: the header is everything but the ANS words, the classical codings and
            # the images' metadata chunks (format 17 on), which follow it.
            stream_bytes, classical_bytes = 4 * len(words), sum(len(entry.data) for entry in header.images)
            metadata_bytes = sum(len(chunk.data) for entry in header.images for chunk in entry.metadata)
            parts = (f"header {len(data) - stream_bytes - classical_bytes - metadata_bytes} B, ANS stream "
                     f"{stream_bytes} B, classical codings {classical_bytes} B"
                     + (f", metadata {metadata_bytes} B" if metadata_bytes else ""))
            say(f"{path}: {len(data)} bytes ({parts}); {described}; {coding}")
            # The model's stream, where no tile of it went through the model, is the predictor's (as compress says),
            # or raw bytes where every tile is (format 2's whitened tiles)
            stream = "model"
            if coder is not None and needs_no_model(header):
                from codec.tilekinds import RAW, WHITENED

                raw = coder.schedule and all(kind in (RAW, WHITENED) for kind, _ in coder.schedule)
                stream = f"{'raw bytes' if raw else 'predictor'} (no model tile)"
            subpixels = 0
            for entry in header.images:
                coding, data_bytes = entry.coding, len(entry.data)  # formats 1 and 2: always the model
                how = stream if coding == "model" else f"{coding}, {data_bytes} B"
                if coding == "model" and data_bytes:
                    how += f" (+ {data_bytes} B of classically coded planes)"
                if entry.depth == LOW:  # a 16-bit image's low bits, after the image
                    say(f"    its low {_counted(low_bits(previous.depth), 'bit')}: {how}")
                    continue
                channels = SUBPIXELS_PER_PIXEL.get(entry.mode, 3)
                subpixels += channels * entry.width * entry.height
                if entry.metadata:
                    from vaezip.metadata import describe

                    how += f"; metadata {describe(entry.metadata)}"
                bits = f" 16-bit ({entry.depth}), its top 8 bits" if entry.depth else \
                    f" {entry.info['bits']}-bit" if entry.info.get("bits") else ""
                say(f"  {entry.name}: {entry.width}x{entry.height} {entry.mode}{bits}, {how}")
                previous = entry
            say(f"  {8 * len(data) / max(subpixels, 1):.4f} bits per subpixel")
        failures += failed()
    _finish(failures, len(inputs))


def _run_info(checkpoint: dict, run: Path, figures: dict | None = None) -> dict:
    """What a user model's manifest entry says about where it came from (figures: as measured at install)."""
    config = checkpoint.get("model_config") or {}
    init = checkpoint.get("init")
    counters = checkpoint.get("counters")
    history = counters.get("history") if isinstance(counters, dict) else None
    step = checkpoint.get("step", 0)
    info = {
        "channels": config.get("image_channels") if isinstance(config, dict) else None,
        "data": str(checkpoint.get("data_source", "")),
        "steps": step if type(step) is int else 0,
        # where its training started (a shipped model's name and sha256): plain text only, whatever the file holds
        "init": {str(key): str(value) for key, value in init.items()} if isinstance(init, dict) else None,
        "run": str(Path(run).resolve()),
        "vaezip": __version__,
    }
    if not figures:
        figures = {}
        validated = [entry for entry in history if isinstance(entry, dict) and "val_bpsp" in entry] \
            if isinstance(history, list) else []
        try:
            if validated:
                last = validated[-1]
                figures[f"validation bound (step {int(last['step'])})"] = round(float(last["val_bpsp"]), 4)
                if "achieved_bpsp" in last:
                    figures["validation achieved"] = round(float(last["achieved_bpsp"]), 4)
        except (KeyError, TypeError, ValueError, OverflowError):  # a checkpoint's history of other kinds: no figures
            figures = {}
    # JSON holds no NaN or infinity (a diverged validation's): such a figure is left out of the manifest
    info["figures"] = {key: value for key, value in figures.items()
                       if not isinstance(value, float) or math.isfinite(value)}
    return info


def _integer_problem(path: Path):
    """Why the weights at `path` cannot build the integer model the coder runs (None: they can), and the
    model's config. A file that is not valid weights at all is a CheckpointError naming it."""
    from vaezip.checkpoint import load_weights
    from vaezip.model.integer import IntegerVAE

    from vaezip.unpack import MAX_TILE

    model, _ = load_weights(path)
    if model.config.stride > MAX_TILE:  # its tiles are a multiple of it: no file of it would decode
        return (f"its stride {model.config.stride} is more than vaezip's largest tile {MAX_TILE}: it can code no "
                f"file"), model.config
    try:
        IntegerVAE(model)  # a pixel-context head included
    except ValueError as error:
        return str(error), model.config
    return None, model.config


def _install(checkpoint: dict | None, name: str, force: bool, info: dict, weights: Path | None = None) -> None:
    """Install a checkpoint's EMA weights (or the weights file `weights`, byte for byte: its sha256 stays the
    same) as user model `name`."""
    import tempfile

    from vaezip import zoo
    from vaezip.checkpoint import export_weights

    with tempfile.TemporaryDirectory(prefix="vaezip-export-") as folder:
        if weights is None:
            weights = Path(folder) / f"{name}.safetensors"
            export_weights(checkpoint, weights, name)
        problem, config = _integer_problem(weights)
        if problem is not None:
            raise Failure(f"not installed: {problem}")
        info = {**info, "channels": config.image_channels}
        entry = zoo.install(name, weights.read_bytes(), info=info, force=force)
    out.print(f"installed user model {name!r}: {zoo.user_models_dir() / entry['file']} (sha256 {entry['sha256']}); "
              f"use it with: vaezip compress IMAGE -m {name}", highlight=False, markup=False, soft_wrap=True)
    if entry.get("replaced"):
        _say(f"{name!r} had other weights (sha256 {str(entry['replaced'].get('sha256'))[:16]}...)"
             f"{_retired_note(zoo, name, entry['replaced'])}")


@app.command()
def export(
    run: Path = typer.Argument(..., help="run folder or checkpoint .pt (to install: also a .safetensors weights "
                               "file)"),
    output: Optional[Path] = typer.Argument(None, help="weights file to write (.safetensors); without it, the "
                                            "model is installed as user model NAME"),
    name: str = typer.Option(..., help="the model name recorded in the weights and in .vz files"),
    force: bool = typer.Option(False, "--force", "-f", help="overwrite OUTPUT, or replace an installed user "
                               "model of that name"),
):
    """Write a run's EMA weights as safetensors (no optimizer state; loads without executing code), or without
    OUTPUT install them as a user model: `vaezip compress -m NAME` then uses them and `vaezip decompress` finds
    them by name. The file defines the integer model the coder runs (derived from it exactly, the same on every
    machine): export checks that it can be built."""
    with user_errors():
        if output is None:
            from vaezip import zoo

            zoo.check_installable(name, force)
            if run.suffix == ".safetensors" and run.is_file():
                _install(None, name, force, {"run": str(run.resolve()), "vaezip": __version__, "figures": {}},
                         weights=run)
                return
            from vaezip.checkpoint import load_checkpoint

            checkpoint = load_checkpoint(run)
            _install(checkpoint, name, force, _run_info(checkpoint, run))
            return
        # Every refusal before torch is imported and the checkpoint read
        if output.suffix != ".safetensors":  # `-m FILE` reads weights by that suffix (a .pt is a checkpoint)
            raise UsageFailure(f"OUTPUT must end in .safetensors, not {output.name!r}")
        if output.is_dir():
            raise Failure(f"{output}: is a folder")
        if output.exists() and not force:
            raise Failure(f"{output} already exists (use --force to overwrite)")
        if run.suffix == ".safetensors" and run.is_file():  # already weights: they go as they are, or installed
            raise UsageFailure(f"{run} is a weights file already: copy it as it is, or install it without OUTPUT "
                               f"(vaezip export {run} --name NAME)")
        from vaezip import zoo
        from vaezip.errors import CheckpointError
        from vaezip.files import refuse_special_output, temporary_path

        if "/" in name or "\\" in name:  # shown beside every figure of the file: never a path
            raise CheckpointError(f"--name {name!r}: a model name holds no '/' or '\\'")
        zoo.check_not_shipped(name, "--name ")  # a file under it would pass for the shipped model beside its figures
        refuse_special_output(output)  # a FIFO or device is never replaced, --force or not
        from vaezip.checkpoint import check_model_name, export_weights, load_checkpoint
        from vaezip.model.integer import INTEGER_RULES

        check_model_name(name, "--name")  # one the weights would then refuse to load with: before any writing
        checkpoint = load_checkpoint(run)
        # Written beside OUTPUT (a link's own folder: the rename replaces the link) and checked there: weights that
        # cannot build the integer model (or load at all) leave OUTPUT as it was, a file --force would replace too.
        written = temporary_path(output.absolute())
        try:
            digest = export_weights(checkpoint, written, name)
            try:
                problem, _ = _integer_problem(written)
            except CheckpointError as error:  # named as OUTPUT, not as the temporary
                raise CheckpointError(str(error).replace(written.name, output.name)) from None
            if problem is not None:
                raise Failure(f"{output}: not written: {problem}")
            os.replace(written, output)
        finally:
            with suppress(OSError):
                written.unlink()
        kind = f"integer-exact model, rules {INTEGER_RULES} (its files decode on any machine)"
        out.print(f"{output}: sha256 {digest}; {kind}", highlight=False)


@app.command()
def models(
    remove: Optional[str] = typer.Option(None, "--remove", metavar="NAME", help="uninstall this user model: its "
                                         "name goes, its weights stay as retired, for the files made with them"),
    purge: Optional[str] = typer.Option(None, "--purge", metavar="NAME", help="delete the retired weights of this "
                                        "name: files made with them will never decode again"),
):
    """List the shipped models, your installed user models and retired weights (vaezip export RUN --name NAME
    installs one)."""
    from rich.text import Text

    from vaezip import zoo

    with user_errors():
        if remove is not None and purge is not None:
            raise UsageFailure("--remove and --purge: one at a time")
        if remove is not None:
            entry = zoo.remove(remove)
            retired = _retired_note(zoo, remove, entry)
            out.print(f"removed user model {remove!r}{retired}", highlight=False, markup=False, soft_wrap=True)
            return
        if purge is not None:
            purged = zoo.purge(purge)
            shas = ", ".join(f"sha256 {str(entry.get('sha256', '?'))[:16]}..." for entry in purged)
            out.print(f"deleted the retired weights of {purge!r} ({shas}): files made with them will no longer "
                      f"decode", highlight=False, markup=False, soft_wrap=True)
            return
        broken = False
        try:
            rows = zoo.listing()
        except ValueError as error:  # a damaged user manifest: still show the shipped models, and say why
            try:
                rows, broken = list(_shipped_rows(zoo)), True
            except ValueError:  # the shipped manifest is the damaged one: that error alone
                raise error from None
            _tell("warning", str(error))
        try:
            folder = zoo.user_models_dir()
        except ValueError:  # VAEZIP_MODELS unusable: said in the warning above, shipped models listed all the same
            folder = None
        columns = ("name", "kind", "channels", "default for", "trained on", "figures")
        table = Table(title=f"models: shipped (pretrained/) and user ({folder or 'none: see the warning'})")
        for column in columns:
            table.add_column(column)
        # A pipe or a log gets one tab-separated line per model, the weights file last.
        lines = ["\t".join((*columns, "file"))]
        for row in rows:
            figures = row.get("figures") if isinstance(row.get("figures"), dict) else {}
            text = "; ".join(f"{k}: {v}" for k, v in figures.items())
            if text and row["kind"] == "shipped" and row.get("measured_on"):  # coders improve after shipping
                text += f" (measured when shipped: {row['measured_on']}; today's coder: README's Results)"
            if row["kind"] == "retired":
                text = (f"replaced or removed {str(row.get('retired', '?'))[:10]}; kept for the files made with it "
                        f"(vaezip models --purge {row['name']} deletes it)")
            if row.get("problem"):
                text = f"UNUSABLE: {row['problem']}"
            # A user manifest is a file anyone may have edited: no markup, no control characters.
            cells = [shown(str(cell)).replace("\t", " ") for cell in (
                row["name"], row["kind"], str(row.get("channels", "?")), row.get("default_for", ""),
                str(row.get("data", "")), text)]
            table.add_row(*(Text(cell) for cell in cells))
            home = zoo.PRETRAINED_DIR if row["kind"] == "shipped" else folder or Path("?")
            lines.append("\t".join((*cells, shown(str(home / str(row.get("file", "?")))).replace("\t", " "))))
        if out.is_terminal:
            out.print(table)
        else:
            _require_stdout()
            typer.echo("\n".join(lines))  # rich would expand the tabs
        if folder is None:
            pass
        elif folder.exists() and not folder.is_dir():
            _tell("warning", f"{folder} ({zoo.USER_MODELS_ENV} or the XDG default) is not a folder: no user models")
        elif not any(row["kind"] == "user" for row in rows) and not broken:
            retired = sum(row["kind"] == "retired" for row in rows)
            kept = f" ({_counted(retired, 'retired weights file')} listed)" if retired else ""
            (out if out.is_terminal else err).print(f"no user models in {folder}{kept} (set {zoo.USER_MODELS_ENV} "
                                                    f"for another folder; vaezip export RUN --name NAME installs one)")


def _retired_note(zoo, name: str, entry) -> str:
    """What became of the weights of user model `name` (its `entry`) that were just replaced or removed."""
    if not isinstance(entry, dict):  # a damaged manifest's entry (vaezip models warns of it): it named no weights
        return " (its manifest entry named no weights: it was not a mapping)"
    file = entry.get("file", "?")
    if not any(kept.get("file") == file for kept in zoo.retired_entries()):
        holder = zoo.usable_holder(str(entry.get("sha256", "")), zoo.user_manifest())
        if holder is not None:
            return f" ({file}; its weights stay installed as {holder!r})"
        if isinstance(file, str) and not (zoo.user_models_dir() / file).is_file():  # as zoo._retire tells
            return f" (its weights file {file} was already missing: none kept as retired)"
        return f" ({file})"
    return (f": its weights {zoo.user_models_dir() / file} stay as retired weights, so files made with them still "
            f"decode (vaezip models --purge {name} deletes them)")


def _shipped_rows(zoo) -> list[dict]:
    shipped = zoo.manifest()
    defaults = {value: key for key, value in shipped.get("defaults", {}).items()}
    return [{**entry, "name": name, "kind": "shipped", "default_for": defaults.get(name, "")}
            for name, entry in shipped["models"].items()]


# ---------------------------------------------------------------------------------------------- bench


@app.command()
def bench(
    datasets: Optional[list[str]] = typer.Argument(
        None,
        help="data set names (mnist-test, imagenette32-val, imagenette56-val, cifar4k-holdout, kodak, photos, "
        "gray8bit, ...), folders of images or .npz files; default: mnist-test imagenette32-val imagenette56-val "
        "cifar4k-holdout kodak",
    ),
    model: Optional[list[str]] = typer.Option(
        None, "--model", "-m",
        help="model for vaezip (name, run folder or weights file); repeat for one grey and one colour model; "
        "default: the shipped default for each image mode",
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", "-n", help="first N images of every data set (default: a limit per named data set, "
        "sized for a 2-core CPU; folders: all images)",
    ),
    codecs: Optional[list[str]] = typer.Option(
        None, "--codecs", "-c",
        help="comma separated or repeated: png webp jpeg2000 jpegls jpegxl-e7 jpegxl-e9 qoi webp-q75 vaezip "
        "vaezip-archive vaezip-model (the model path for every image, no classical coding) vaezip-fast (compress "
        "--fast: no network), or 'classical' / "
        "'all' (default: the classical ones but webp-q75, vaezip and vaezip-archive)",
    ),
    out_dir: str = typer.Option("bench-results", "--out", "-o",
                                help="folder for results.csv, summary.csv, results.md and charts"),
    tile: Optional[int] = typer.Option(None, help="vaezip tile side in pixels (default 32; 256 for vaezip-fast)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda (vaezip)"),
    force: bool = typer.Option(False, "--force", "-f", help="replace the report the --out folder holds (its "
                               "results, charts and any chart named scatter_*.png)"),
):
    """Compare vaezip with classical lossless codecs: bits per subpixel, MB/s, round trip; report + charts."""
    import math
    import shlex

    from vaezip.bench.suite import LEARNED_NAMES, execute, given_twice, parse_codecs, prepare, report
    from vaezip.files import signals_as_exceptions

    with user_errors(), signals_as_exceptions():  # SIGTERM as Ctrl-C: a report half made is removed, the last kept
        out_dir = _folder_option(out_dir, "--out")
        if limit is not None and limit < 1:
            raise UsageFailure(f"--limit must be at least 1, not {limit}")
        try:
            chosen = parse_codecs(codecs)
        except ValueError as error:  # a usage error, as every option's (exit 2)
            raise UsageFailure(str(error)) from None
        if model and not any(name in LEARNED_NAMES for name in chosen):  # a typo of a name would pass unseen
            raise UsageFailure(f"--model applies to vaezip's codecs ({', '.join(LEARNED_NAMES)}), and -c names "
                               f"none of them")
        twice = given_twice(datasets or ())
        if twice is not None:
            raise UsageFailure(f"data set {twice} given twice")
        _check_tile(tile)
        _check_device(device)
        if out_dir.is_symlink() and not out_dir.exists():
            raise Failure(f"--out {out_dir}: a link to nothing")
        if out_dir.exists() and not out_dir.is_dir():  # known before the run, not after its minutes
            raise Failure(f"{out_dir}: not a folder (bench writes results.csv, results.md and charts into a folder)")
        there = out_dir.absolute()
        while not there.exists():
            there = there.parent
        if not there.is_dir() or not os.access(there, os.W_OK):
            raise Failure(f"--out {out_dir}: {there} is {'not a folder' if not there.is_dir() else 'not writable'}")
        from vaezip.bench.report import report_files_in

        held = report_files_in(out_dir)
        folders = [name for name in held if (out_dir / name).is_dir() and not (out_dir / name).is_symlink()]
        if folders:  # the report writes (or removes) a file of that name
            raise Failure(f"{out_dir / folders[0]}: a folder where the report has a file; choose another --out")
        if held and not force:  # known before the run: a report replaces them all (and drops charts it did not draw)
            raise Failure(f"{out_dir}: holds a report already ({', '.join(held)}); --force replaces it, or choose "
                          f"another --out")
        plan = prepare(datasets or (), models=model or (), limit=limit, codecs=codecs, tile=tile, device=device,
                       exclude=out_dir)
        command = shlex.join(["vaezip", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None
        if command is None:  # called in-process (tests): rebuild it from the arguments
            args = [*(datasets or ())]
            args += [f"--model={m}" for m in model or ()] + ([f"--limit={limit}"] if limit is not None else [])
            args += [f"--codecs={c}" for c in codecs or ()] + [f"--out={out_dir}"]
            args += ([f"--tile={tile}"] if tile is not None else []) + ([f"--device={device}"] if device != "auto" else [])
            args += ["--force"] if force else []
            command = shlex.join(["vaezip", "bench", *args])
        from vaezip.bench.report import have_matplotlib

        if plan.skipped:
            err.print(f"not available here, skipped: {', '.join(plan.skipped)} (pip install -e '.[bench]')",
                      highlight=False)
        if not have_matplotlib():
            err.print("matplotlib is not installed: no charts (pip install -e '.[bench]')", highlight=False)
        for s in plan.sets:
            listed = [c.name for c in s.codecs] + (["vaezip-archive"] if s.archive else [])
            err.print(f"{s.name}: {len(s.images)} images ({'all' if s.limit is None else f'limit {s.limit}'}), "
                      f"codecs {', '.join(listed)}")
            for change in s.images.changed:  # bench measures grey or RGB samples: what reading changed is said
                _tell("warning", f"{s.name}: {change}; every codec measures the images as read (compress keeps "
                                 f"them whole)")
        group: list = []

        def flush():
            if group:
                r0 = group[0]
                good = [r for r in group if r.roundtrip_ok]
                sub, nbytes = sum(r.subpixels for r in good), sum(r.bytes for r in good)
                seconds = sum(r.encode_s + (0 if math.isnan(r.decode_s) else r.decode_s) for r in good)
                rate = f"{8 * nbytes / sub:.3f} bpsp" if sub else "n/a"
                bounded = [r for r in good if not math.isnan(r.bound_bpsp)]  # weighted as the report's aggregate
                if bounded:
                    bound = sum(r.bound_bpsp * r.subpixels for r in bounded) / sum(r.subpixels for r in bounded)
                    rate += f" (bound {'~' if any(r.bound_projected for r in bounded) else ''}{bound:.3f})"
                failed = f", {len(group) - len(good)} FAILED" if len(good) < len(group) else ""
                bar.console.print(f"  {r0.dataset} / {r0.codec}: {rate}, {seconds:.1f} s{failed}", highlight=False,
                                  soft_wrap=True)
                group.clear()

        def on_row(row):
            if group and (group[0].dataset, group[0].codec) != (row.dataset, row.codec):
                flush()
            group.append(row)
            bar.advance(task)

        with Progress(TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
            task = bar.add_task("bench", total=plan.steps)
            rows = execute(plan, progress=on_row)
            flush()
        files = report(rows, plan, out_dir, command=command)
        from vaezip.bench import aggregate

        aggs = aggregate(rows)
        cell = {(a.dataset, a.codec): a for a in aggs}
        sets = list(dict.fromkeys(a.dataset for a in aggs))
        title = f"bits per subpixel (lower is better), {plan.seconds:.0f} s"
        table = Table(title=title, min_width=len(title) + 4)  # a narrow table would wrap its title over lines
        table.add_column("codec")
        for ds in sets:
            table.add_column(ds, justify="right")
        table.add_row("images", *(str(max(a.images for a in aggs if a.dataset == ds)) for ds in sets))
        def text(ds, name, field):
            a = cell.get((ds, name))
            if a is None:
                return "-"
            value = getattr(a, field)
            if math.isnan(value):
                return "-" if a.all_ok else "failed"
            marked = "~" if field == "bound_bpsp" and a.bound_projected else ""
            return f"{marked}{value:.3f}" + ("" if a.all_ok else f" ({a.failures} failed)")

        for name in dict.fromkeys(a.codec for a in aggs):
            table.add_row(name, *(text(ds, name, "bpsp") for ds in sets))
            if any(not math.isnan(a.bound_bpsp) for a in aggs if a.codec == name):
                table.add_row(f"  {name} bound", *(text(ds, name, "bound_bpsp") for ds in sets))
        # a pipe or a log file gets the whole table, however many data sets (a terminal wraps it itself)
        wide = out if out.is_terminal else Console(width=max(out.width, 24 + 19 * len(sets)), file=out.file,
                                                   emoji=False, markup=False, highlight=False)
        wide.print(table)
        out.print(f"wrote {', '.join(str(p) for p in files.values())}", highlight=False, soft_wrap=True)
        failures = sum(1 for r in rows if not r.roundtrip_ok)
        if failures:
            raise Failure(f"{failures} round trip(s) failed: see {out_dir / 'results.md'}")


def _say_interrupted() -> None:
    try:
        err.print("vaezip: interrupted")
    except (OSError, ValueError):  # stderr closed or gone: the exit status says it
        pass


def main() -> None:
    """The `vaezip` command (and `python -m vaezip`; both through vaezip.command, which imports this module under a
    guard against Ctrl-C): the app, then the process ends at once with its exit
    status (os._exit), without the interpreter's teardown, which spent ~0.6 s freeing torch's, numba's and the
    model's objects one by one after every command that codes through the model (kodim23's compress: 7.6 ->
    7.0 s). By then every output file is written and closed (or removed), and the streams are flushed here;
    nothing vaezip runs needs an exit hook. Tests call `app` itself. Before the app, the C allocator is set
    to keep freed memory for reuse (vaezip/allocator.py: page faults cost the coder ~0.3 s of kodim23's 4 s)."""
    retain_freed_memory()
    warnings.showwarning = _one_line_warning  # here, not in the app: tests call the app and record warnings
    Console.on_broken_pipe = _on_broken_pipe  # here, not at import: a host importing vaezip keeps rich's own
    try:
        app(prog_name="vaezip")
        code = 0
    except SystemExit as exit_:
        code = exit_.code
        if code == 130 and not _interruption_told:  # typer's silent exit on a Ctrl-C before the command ran
            _say_interrupted()
    except KeyboardInterrupt:  # before the app took over
        code = 130
        _say_interrupted()
    except BrokenPipeError:  # outside any command (the help): as a SIGPIPE would end it
        code = _reader_gone()
    except OSError as error:  # the same (the help to a full disk): one line, not a traceback
        code = f"vaezip: error: cannot write ({error.strerror or type(error).__name__})"
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # None: the descriptor was closed when the process started
                stream.flush()
        except BrokenPipeError:  # text a reader that went away (`| head`) did not take: as a SIGPIPE would end it
            code = code or PIPE_CLOSED
        except (OSError, ValueError):  # a closed stream: what was written is written
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
