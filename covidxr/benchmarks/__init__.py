"""Throughput measurements for humans (``covidxr-bench``, ``make bench``); tests never time."""
