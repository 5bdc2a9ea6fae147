"""The package's imports point one way (issue 16): no cycle among vaezip/ and codec/ modules, lazy
(function-level) imports included; codec/ imports neither vaezip/ nor torch; the modules the CLI starts with
import no torch. The graph is read with `ast` by scripts/import_graph.py, which nothing here imports."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(SPEC)
sys.modules["import_graph"] = import_graph  # dataclasses look their module up while the class is built
SPEC.loader.exec_module(import_graph)


@pytest.fixture(scope="module")
def graph():
    return import_graph.build(ROOT)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in ("vaezip", "codec"):
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    return root


def test_the_graph_holds_every_module_and_its_lazy_imports(graph):
    assert {"vaezip.api", "vaezip.archive", "vaezip.models", "vaezip.zoo", "vaezip.model.vae", "codec.ans"} <= set(
        graph.modules)
    assert graph.edges["vaezip.api"]["vaezip.archive"] == "lazy"  # a function-level import is in the graph
    assert graph.edges["vaezip.model"]["vaezip.model.vae"] == "top"
    assert graph.edges["vaezip.bench.suite"]["vaezip.bench.learned"] == "top"  # relative, resolved


def test_no_import_cycles(graph):
    assert import_graph.cycles(graph) == []


def test_codec_imports_neither_vaezip_nor_torch(graph):
    for module in graph.modules:
        if module.split(".")[0] == "codec":
            assert all(target.split(".")[0] == "codec" for target in graph.edges[module]), module
            assert "torch" not in graph.external[module], module


def test_what_the_cli_starts_with_imports_no_torch(graph):
    for module in import_graph.TORCH_FREE:
        modules, outside = import_graph.loads_at_import(graph, module)
        assert "torch" not in outside, (module, sorted(modules))
    assert "torch" in import_graph.loads_at_import(graph, "vaezip.coding")[1]  # the check can see torch


def test_the_layers_put_the_facade_above_the_coder(graph):
    layers = import_graph.layers(graph)
    assert set(layers) == set(graph.modules)  # every module placed: no cycle left any out
    assert layers["codec.container"] < layers["vaezip.archive"] < layers["vaezip.api"] < layers["vaezip.cli"]
    assert layers["vaezip.zoo"] < layers["vaezip.models"] < layers["vaezip.archive"]


def test_the_script_passes_on_the_repository(capsys):
    assert import_graph.main(["--root", str(ROOT)]) == 0
    assert "topological order:" in capsys.readouterr().out


def test_a_cycle_through_a_lazy_relative_import_fails(tmp_path):
    root = _tree(tmp_path, {
        "vaezip/low.py": "X = 1\n",
        "vaezip/high.py": "from vaezip import low\n",
        "vaezip/sub/__init__.py": "from .leaf import Y\n",
        "vaezip/sub/leaf.py": "from ..low import X\n\ndef later():\n    from .. import high\n    return high\n",
        "vaezip/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vaezip.high import low\n",
    })
    assert import_graph.main(["--root", str(root)]) == 0
    (root / "vaezip" / "low.py").write_text("X = 1\n\ndef f():\n    from vaezip.sub import leaf\n")
    graph = import_graph.build(root)
    assert graph.edges["vaezip.sub.leaf"] == {"vaezip.low": "top", "vaezip.high": "lazy"}
    assert graph.edges["vaezip.sub"] == {"vaezip.sub.leaf": "top"}
    assert graph.edges["vaezip.typed"] == {"vaezip.high": "typing"}
    assert import_graph.cycles(graph) == [["vaezip.high", "vaezip.low", "vaezip.sub.leaf", "vaezip.high"]]
    assert import_graph.main(["--root", str(root)]) == 1


def test_codec_importing_vaezip_or_torch_fails(tmp_path):
    root = _tree(tmp_path, {"vaezip/errors.py": "", "codec/ans.py": "import numpy\n"})
    assert import_graph.problems(import_graph.build(root)) == []
    (root / "codec" / "ans.py").write_text("import numpy\n\ndef f():\n    import torch.nn\n    from vaezip import errors\n")
    assert import_graph.problems(import_graph.build(root)) == [
        "codec.ans imports vaezip.errors: codec/ never imports vaezip/",
        "codec.ans imports torch: codec/ never does",
    ]


def test_an_old_cycle_put_back_fails(tmp_path):
    """The real package with zoo.py importing LoadedModel from the API again, as it did before issue 16."""
    for package in ("vaezip", "codec"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    zoo = tmp_path / "vaezip" / "zoo.py"
    zoo.write_text(zoo.read_text() + "\n\ndef _loaded():\n    from vaezip.api import LoadedModel\n\n    return LoadedModel\n")
    found = import_graph.cycles(import_graph.build(tmp_path))
    assert found and all("vaezip.zoo" in cycle for cycle in found)
    assert any(line.startswith("import cycle:") for line in import_graph.problems(import_graph.build(tmp_path)))


def test_numpy_random_is_imported_before_compress_starts_its_threads():
    """Two threads importing numpy.random for the first time at once (numba's import and numpy's lazy np.random)
    deadlocked in Python's import locks: vaezip.archive imports it first, in a fresh process here."""
    import subprocess

    script = "import sys, vaezip.archive; print('numpy.random' in sys.modules, 'numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.stdout.split() == ["True", "False"], out.stderr
