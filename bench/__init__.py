"""A benchmark harness for generative and classical sequential recommenders.

One protocol (leave-one-out, full-catalog ranking), one metric implementation and
one result-record format for every method.  Entry point: ``python -m bench``.
"""

__version__ = "0.1.0"
