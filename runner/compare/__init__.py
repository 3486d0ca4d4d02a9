"""Controlled route comparison: the same jobs on several routes, side by side.

:mod:`~runner.compare.plan` checks the manifest against every route before anything is sent
and fits it to each (fields dropped or adapted, as chosen); :mod:`~runner.compare.estimates`
prices it on each and guards that every route's batch holds every line (a comparison's jobs
are its own: their keys fold in its name); :mod:`~runner.compare.results`
turns each route's batch into cells and a summary; :mod:`~runner.compare.page` and
:mod:`~runner.compare.report` write the page and the JSON. :mod:`~runner.compare.session` runs the
whole thing through the façade's ``submit`` and ``run`` (``runner.app.compare``).
"""

from runner.compare.estimates import RouteEstimate
from runner.compare.plan import ComparisonPlan, FitChoice, RouteFit, plan_comparison
from runner.compare.report import ComparisonReport
from runner.compare.results import Cell, RouteSummary
from runner.compare.session import ComparisonOptions

__all__ = [
    "Cell",
    "ComparisonOptions",
    "ComparisonPlan",
    "ComparisonReport",
    "FitChoice",
    "RouteEstimate",
    "RouteFit",
    "RouteSummary",
    "plan_comparison",
]
