"""What the whole `vaezip compress` and `vaezip decompress` commands cost on one image, imports and all, for each
of several option sets: the file's bytes, the wall and CPU seconds of each command (least and most over the
rounds, which alternate the option sets so that a machine's drift spreads over all of them). Every file is decoded
and its pixels compared with the image's; the peak resident memory is the most of the rounds'.

    python scripts/command_costs.py ../shared/data/kodak/kodim23.png [--rounds 3] [--sets default fast ...]
        [--markdown docs/results/speed/kodim23-commands.md] [--made-by "COMMAND THAT MADE THE IMAGE"]

The README's kodim23 command times, the sizes of its file in each format, and the memory of a large mosaic's
(scripts/make_mosaic.py) commands come from this script. The first run after installing compiles the coder's
kernels (~25 s): a warm-up compress and decompress with the default options run before the timed rounds,
untimed (an option set whose kernels differ may still compile in its first round, on a cache that lacks them).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

# label -> compress's options (decompress takes none: the file says how it was coded)
OPTION_SETS = {
    "default": [],
    "fast": ["--fast"],
    "tile32": ["--tile", "32"],
    "format21": ["--format", "21"],
    "format20": ["--format", "20"],
    "format19": ["--format", "19"],
    "format16": ["--format", "16"],
    "format15": ["--format", "15"],
    "format14": ["--format", "14"],
    "format13": ["--format", "13"],
    "format12": ["--format", "12"],
    "format11": ["--format", "11"],
    "fast-format9": ["--fast", "--format", "9"],
}


def vaezip(*args: str) -> tuple[float, float, float]:
    """Run `vaezip ARGS` (this interpreter's), failing loudly: (wall seconds, CPU seconds, peak resident MB) of
    that process (os.wait4's own figures of it)."""
    with tempfile.TemporaryFile() as said:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "vaezip", *args], stdout=subprocess.DEVNULL, stderr=said)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            said.seek(0)
            raise SystemExit(f"vaezip {' '.join(args)} failed: {said.read().decode().strip()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024 / 1e6  # Linux: KiB


def _processor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "an unnamed processor"


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sets", nargs="+", choices=list(OPTION_SETS), default=list(OPTION_SETS))
    parser.add_argument("--markdown", help="also write the table, with the command and the machine, to this file")
    parser.add_argument("--made-by", help="the command that made the image, for the markdown (a mosaic's, say)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    source = Path(args.image)
    pixels = np.asarray(Image.open(source))
    work = Path(tempfile.mkdtemp(prefix="vaezip-costs-"))
    try:
        image = work / source.name  # the file stores this name, as `vaezip compress IMAGE` stores its own
        shutil.copyfile(source, image)
        vaezip("compress", "-q", "-f", str(image), "-o", str(work / "warm.vz"))
        vaezip("decompress", "-q", "-f", str(work / "warm.vz"), "-o", str(work / "warm.png"))
        sizes: dict[str, int] = {}
        times = {label: {f"{command}{what}": [] for command in ("compress", "decompress")
                         for what in ("", " CPU", " MB")} for label in args.sets}
        for _ in range(args.rounds):
            for label in args.sets:
                packed, unpacked = work / f"{label}.vz", work / f"{label}.png"
                for command, arguments in (("compress", [*OPTION_SETS[label], str(image), "-o", str(packed)]),
                                           ("decompress", [str(packed), "-o", str(unpacked)])):
                    wall, cpu, peak = vaezip(command, "-q", "-f", *arguments)
                    times[label][command].append(wall)
                    times[label][f"{command} CPU"].append(cpu)
                    times[label][f"{command} MB"].append(peak)
                if not np.array_equal(np.asarray(Image.open(unpacked)), pixels):
                    raise SystemExit(f"{label}: the decoded pixels differ from the image's")
                size = packed.stat().st_size
                if sizes.setdefault(label, size) != size:
                    raise SystemExit(f"{label}: {size} bytes this round, {sizes[label]} before")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    width = max(map(len, args.sets))
    head = (f"{'options':<{width}}  {'bytes':>11}  {'compress s':>11}  {'(CPU)':>11}  {'(peak MB)':>9}  "
            f"{'decompress s':>12}  {'(CPU)':>11}  {'(peak MB)':>9}")
    lines = [head]
    for label in args.sets:
        t = times[label]
        lines.append(f"{label:<{width}}  {sizes[label]:>11,}  {spread(t['compress']):>11}  "
                     f"{spread(t['compress CPU']):>11}  {max(t['compress MB']):>9.0f}  {spread(t['decompress']):>12}  "
                     f"{spread(t['decompress CPU']):>11}  {max(t['decompress MB']):>9.0f}")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        command = shlex.join(["python", "scripts/command_costs.py", args.image, "--rounds", str(args.rounds),
                              "--markdown", args.markdown]
                             + (["--sets", *args.sets] if args.sets != list(OPTION_SETS) else [])
                             + (["--made-by", args.made_by] if args.made_by else []))
        made = f" The image: `{args.made_by}`." if args.made_by else ""
        machine = f"{_processor()}, {os.cpu_count()} CPUs ({platform.machine()})"
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(
            f"# {source.name}: the whole commands, imports included\n\n"
            f"`{command}`, {time.strftime('%Y-%m-%d')}, on {machine}: least and most of {args.rounds} round(s) "
            f"(the option sets alternating), wall seconds and the command's CPU seconds; every file decoded to the "
            f"image's pixels.{made}\n\n```\n{table}\n```\n")


if __name__ == "__main__":
    main()
