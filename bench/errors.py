"""Exceptions that carry a CLI exit code (CLI.md: exit codes) and a one-line, actionable message."""

from __future__ import annotations


class BenchError(Exception):
    """Base of errors the CLI turns into one line on stderr and an exit code."""

    exit_code = 4


class InputError(BenchError):
    """Usage or input error: bad flag, missing/corrupt model dir, unknown variant, bad dataset or config."""

    exit_code = 2


class VerdictFailed(BenchError):
    """A verdict failed (regression, variant out of tolerance, release check)."""

    exit_code = 1


class CellNotRun(BenchError):
    """The requested single cell could not run (status unavailable or failed)."""

    exit_code = 3
