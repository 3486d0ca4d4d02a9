"""imagerun: reliable, auditable bulk image generation through OpenAI-compatible APIs."""

from runner.errors import ImagerunError
from runner.models import JobState, Outcome, Shape
from runner.routes import Catalog, Route, load_catalog

__all__ = ["Catalog", "ImagerunError", "JobState", "Outcome", "Route", "Shape", "load_catalog"]
__version__ = "0.1.0"
