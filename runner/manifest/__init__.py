"""Manifest reading and validation: every problem with its file, line and field.

``scan_manifest`` streams a JSONL or CSV manifest and yields a ``JobSpec`` per valid line and a
``Problem`` per problem; ``check_manifest`` summarises that as a ``CheckReport``.
"""

from runner.manifest.fields import KNOWN_FIELDS
from runner.manifest.keys import KEY_VERSION
from runner.manifest.scan import CheckReport, check_manifest, scan_manifest

__all__ = ["KEY_VERSION", "KNOWN_FIELDS", "CheckReport", "check_manifest", "scan_manifest"]
