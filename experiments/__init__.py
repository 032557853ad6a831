"""Experiment entry points: Hydra runs (``experiments.run``), HE benchmark (``experiments.bench_he``)."""
