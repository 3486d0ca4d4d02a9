"""The CLI names the export layouts itself (to start fast); they must match the exporter's."""

from runner.cli.export import EXPORT_FORMATS
from runner.export import FORMATS


def test_cli_export_choices_are_exactly_the_exporters_formats() -> None:
    assert sorted(EXPORT_FORMATS) == sorted(FORMATS)
