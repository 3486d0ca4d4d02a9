"""Routes as data: the catalog, size rules and model capabilities."""

from runner.routes.catalog import Catalog, ModelCaps, Route, load_catalog

__all__ = ["Catalog", "ModelCaps", "Route", "load_catalog"]
