"""The `vaezip` command's entry point (pyproject's [project.scripts], and `python -m vaezip`): the command line's
modules imported under a guard, so that a Ctrl-C while they load (typer, rich and the CLI: ~0.1 s) ends the run as
one during a command does, with one line and exit status 130, not a traceback."""

import os
import sys


def main() -> None:
    try:
        from vaezip.cli import main as run
    except KeyboardInterrupt:
        try:
            sys.stderr.write("vaezip: interrupted\n")
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):  # stderr closed: the exit status says it
            pass
        os._exit(130)
    run()
