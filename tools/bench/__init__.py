"""`instructrec bench`: the served path under concurrent load, against the same models run directly.

- ``cli``: the typer command (``instructrec bench``, ``python -m tools.bench``)
- ``run``: the run's configuration and phases (warm-up, overhead pass, path without the ranker, sweep)
- ``control``: Triton statistics and the reversible config overrides (batching off, GPU, ``--set``)
- ``driver``: Recommend callers, progress bars and machine facts
- ``report``: headline figures, acceptance checks, the JSON and summary lines
- ``stats``: pure logic (request mix, latency summaries, Triton statistics deltas, ratios)
- ``baseline``: the model-only baseline (the served ONNX graphs in ONNX Runtime, in process)
- ``plot``: the PNG
- ``models``: two ranker graphs side by side (``python -m tools.bench.models``)
"""
