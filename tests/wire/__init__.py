"""The wire zoo: real imagerun against a raw TCP server that writes exact bytes.

``server.py`` is the server (no HTTP library: it reads request heads itself and logs what
reached it and what a provider behind it would have billed); ``cases.py`` holds one handler
per behaviour seen from real servers, CDNs and gateways; ``harness.py`` runs imagerun on a
route pointed at the zoo and asserts the money invariants. To add a case: write its handler,
add a ``Case`` to ``CASES``, and a test saying what imagerun must make of it.
"""
