"""The training recipes of the shipped models name real data sets and real `vaezip train` options."""

import importlib.util
import re
import sys
from pathlib import Path

from typer.testing import CliRunner

from vaezip import data as datasets
from vaezip.cli import app
from vaezip.config import PRESETS
from vaezip.zoo import manifest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("recipes", ROOT / "scripts" / "recipes.py")
recipes = importlib.util.module_from_spec(_spec)
sys.modules["recipes"] = recipes  # dataclasses look their module up while the class is built
_spec.loader.exec_module(recipes)


def test_every_recipe_is_a_valid_train_command():
    # rich sizes its tables from COLUMNS, not from the runner's terminal width: long option names stay whole
    help_text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    for recipe in recipes.RECIPES.values():
        assert recipe.preset in PRESETS
        for name, weight in datasets.parse_mixture(recipe.data):
            assert name in datasets.DATASETS and weight > 0, recipe
        assert recipe.init is None or recipe.init in recipes.RECIPES
        for resume in (False, True):
            command = recipe.command(resume=resume, minutes=30.0, device="cuda")
            assert command[:3] == ["vaezip", "train", recipe.data]
            for option in (arg for arg in command if arg.startswith("--")):
                assert re.search(rf"{option}\b", help_text), (recipe.name, option)


def test_recipes_train_only_on_training_data():
    never = {"kodak", "photos", "photos-wikimedia", "mcmaster", "gray8bit", "mnist-test", "imagenette32-val",
             "imagenette56-val", "cifar4k-holdout"}
    for recipe in recipes.RECIPES.values():
        assert not {name for name, _ in datasets.parse_mixture(recipe.data)} & never, recipe.name


def test_every_shipped_model_has_a_recipe():
    for name, entry in manifest()["models"].items():
        assert name in recipes.RECIPES, name
        assert entry["recipe"] == f"python scripts/recipes.py train {name}"


def test_every_sitting_of_a_sitting_recipe_is_as_long_as_the_first():
    """A recipe made of sittings is time-limited when it resumes too (a second sitting trained on for hours to the
    step target); --minutes gives another length either way."""
    sittings = [recipe for recipe in recipes.RECIPES.values() if recipe.sitting_minutes is not None]
    assert sittings
    for recipe in sittings:
        for resume in (False, True):
            command = recipe.command(resume=resume, minutes=None, device="auto")
            assert command[command.index("--minutes") + 1] == repr(recipe.sitting_minutes), (recipe.name, resume)
            given = recipe.command(resume=resume, minutes=30.0, device="auto")
            assert given[given.index("--minutes") + 1] == "30.0"
