"""OpenAI's Batch API as a route: the lifecycle of remote batches.

In imagerun's words a *batch* is one submitted manifest; the provider's batches are *remote
batches*. A route whose shape is ``batch`` runs its jobs as lines of remote batches:

- ``lines``: a job ↔ one JSONL line (``custom_id`` = its attempt id), an answer line → the
  attempt's result;
- ``client``: the Files and Batches calls, errors classified as synchronous ones are;
- ``gather``: runnable jobs → groups that fit one remote batch (one endpoint and model, at
  most ``batch_max_lines`` lines and ``batch_max_bytes`` bytes);
- ``driver``: the lane of a run: jobs claimed, planned, gathered and opened as remote batches
  (their ledger rows first), the remote batches of a dead driver taken up;
- ``lifecycle``: one remote batch from its ledger rows through upload, creation, polling and
  download to its lines applied (``prepare``, ``apply``), resumable at every step after a
  crash; ``cancel``: ``imagerun cancel`` on the provider.
"""
