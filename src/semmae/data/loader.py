"""A ``DataLoader`` whose worker processes report user errors the way the main process does.

PyTorch re-raises an exception from a DataLoader worker by rebuilding it from text: the class gets one argument,
"Caught BadImageError in DataLoader worker process 0. Original Traceback ... ", or becomes a ``RuntimeError`` when
its constructor wants more (``BadImageError(path, reason)``). Either way the user would see a traceback for a
corrupt image that ``--num-workers 0`` reports in one line. :class:`DataLoader` here turns such an exception back
into the original :class:`~semmae.errors.UserError` class with its original one-line message;
:func:`user_error_from_worker` does the same for any exception (the CLI's last guard uses it too).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import torch.utils.data

from semmae import errors
from semmae.errors import UserError

_CAUGHT_RE = re.compile(r"^Caught (\w+) in DataLoader worker process \d+\.")


def _user_error_classes() -> dict[str, type[UserError]]:
    found: dict[str, type[UserError]] = {}
    todo: list[type[UserError]] = [UserError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.__name__, cls)
        todo.extend(cls.__subclasses__())
    return found


def user_error_from_worker(exc: BaseException) -> UserError | None:
    """The :class:`UserError` a DataLoader worker raised, rebuilt from PyTorch's re-raised ``exc`` (same class, its
    one-line message); ``None`` when ``exc`` is not a worker's user error."""
    if isinstance(exc, UserError) and not _CAUGHT_RE.match(str(exc)):
        return exc
    text = str(exc)
    match = _CAUGHT_RE.match(text)
    if match is None:
        return None
    cls = _user_error_classes().get(match.group(1))
    if cls is None:
        return None
    # the traceback ends with "<module>.<Class>: <message>"; UserError messages are one line
    prefixes = (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: ")
    message = None
    for line in reversed(text.strip().splitlines()):
        for prefix in prefixes:
            if line.startswith(prefix):
                message = line[len(prefix) :]
                break
        if message is not None:
            break
    if message is None:
        return None
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    if isinstance(err, errors.BadImageError):  # keep the fields a caller may read
        path, _, reason = message.removeprefix("cannot read image ").partition(": ")
        err.path, err.reason = path, reason
    return err


class DataLoader(torch.utils.data.DataLoader):
    """``torch.utils.data.DataLoader`` whose iteration re-raises a worker's user error as itself, one line."""

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        it = super().__iter__()
        if self.num_workers == 0:
            return it
        return _reraising(it)


def _reraising(it: Iterator[Any]) -> Iterator[Any]:
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except Exception as e:
            err = user_error_from_worker(e)
            if err is None or err is e:
                raise
            raise err from None
        yield batch
