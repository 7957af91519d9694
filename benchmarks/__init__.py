"""Reproducible benchmarks: evflow against a bare-asyncio floor doing the same persisted work.

Run ``python -m benchmarks`` from the repository root (``--quick`` for small sizes, ``--only
NAME`` for one workload, ``--json PATH`` for the results file). Each workload module holds both
sides; :mod:`benchmarks.floor` is the floor; :mod:`benchmarks.runner` runs them, prints the
table and writes the JSON; :mod:`benchmarks.stacks` summarises a py-spy profile. Figures and
their analysis: ``benchmarks/RESULTS.md``.
"""
