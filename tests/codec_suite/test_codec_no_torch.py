"""codec/ is numpy + constriction only: importing it must never import torch (decoders without torch, fast CLI)."""

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import codec

CODEC_DIR = Path(codec.__file__).parent


def codec_modules() -> list[str]:
    return ["codec"] + [f"codec.{m.name}" for m in pkgutil.iter_modules([str(CODEC_DIR)])]


def test_importing_every_codec_module_does_not_import_torch():
    modules = codec_modules()
    assert "codec.bitsback" in modules and "codec.container" in modules
    script = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    script += "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
    script += "assert not bad, bad\nprint('ok')\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_no_codec_source_mentions_a_torch_import():
    for path in CODEC_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "torch" or n.startswith("torch.") for n in names), f"{path.name} imports torch"
