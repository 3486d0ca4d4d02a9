"""Files on disk: image inspection, output naming, atomic writes, orphan adoption."""
