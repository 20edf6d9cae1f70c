"""Training from the paper's recipes: ``agcnn_zoo.train.train(name, **overrides)`` or
``python -m agcnn_zoo train NAME`` (see :mod:`.engine`, :mod:`.recipes`, :mod:`.splits`)."""
from .engine import ResumeError, RunSettings, TrainResult, run, train
from .recipes import RECIPES, Recipe, recipe_for
from .install import install
from .splits import TRAINING_SETS, load_training_data

__all__ = ["train", "run", "RunSettings", "TrainResult", "ResumeError", "Recipe", "RECIPES",
           "recipe_for", "install", "TRAINING_SETS", "load_training_data"]
