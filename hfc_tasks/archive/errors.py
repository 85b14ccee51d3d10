"""The archive stage's errors, in one place: what the operator and the CLI catch.

:class:`TransferError` is the base (the stage cannot finish; the message names the file(s) and
what to do); :class:`HostKeyError` and :class:`ArchiveFullError` are the two cases a caller
tells apart (a refused host key, a full archive filesystem).
"""

from __future__ import annotations


class TransferError(RuntimeError):
    """The archive stage cannot finish; the message names the file(s) and what to do."""


class HostKeyError(TransferError):
    """The host's key is not the one configured: the connection is refused."""


class ArchiveFullError(TransferError):
    """The archive filesystem is full (ENOSPC): no retry frees space; the operator must."""
