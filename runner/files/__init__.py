"""Files on disk: image inspection (``images``), output names (``layout``), output records
(``outputs``), atomic writes (``atomic``), orphan adoption (``adopt``), processes (``procs``)."""
