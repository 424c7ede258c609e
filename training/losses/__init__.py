"""One loss per file, each with its tensor shapes in the docstring."""

from training.losses.dino import dino_loss
from training.losses.gram import gram_loss
from training.losses.ibot import ibot_loss
from training.losses.koleo import koleo_loss

__all__ = ["dino_loss", "ibot_loss", "koleo_loss", "gram_loss"]
