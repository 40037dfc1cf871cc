"""Every entry point, thin: compose or parse options, call the library, report.

Module ``covidxr.cli.<name>`` is the console script ``covidxr-<name>``.
"""
