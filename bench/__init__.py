"""Flowy's benchmarks: each Flowy path measured side by side with its floor.

Run ``python -m bench`` (or ``make bench``); ``--smoke`` for a CI-sized run.  See
bench/README.md.
"""
