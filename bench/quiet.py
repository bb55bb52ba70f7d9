"""Silence third-party libraries' chatter (logging, prints, warnings) while they load or convert a model.

Converters and transformers print progress and advice to stdout, where ``--json`` promises exactly one
document, and to the user's screen; bench reports what matters itself.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Within the block: logging below ERROR off, stdout swallowed, warnings ignored; all restored after."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


__all__ = ["quiet_libraries"]
