"""The engine: a run's loop, one job's attempt, and what admits, paces and pays for it."""
