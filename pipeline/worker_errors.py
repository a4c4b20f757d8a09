"""A user's mistake found on a worker (a device it lacks, weights not on its disk), told on the launcher.

What only a worker can judge is judged there: on a cluster the launcher may have no GPU and none of
the workers' files. A worker raises ``marked(UserError)``; the runner carries its text back inside
its own error (in process, through the portable runner's job service, or Dataflow's job messages);
``user_errors_from_workers`` finds the marked message in it and raises it on the launcher as the
UserError it was: one paragraph, exit 2, no traceback.
"""
from __future__ import annotations

import contextlib
import json
import re
import traceback

from curation.errors import UserError

MARK = "<<counteranimal-user-error>>"
_FOUND = re.compile(re.escape(MARK) + r"(.*?)" + re.escape(MARK), re.S)


def marked(exc: UserError) -> RuntimeError:
    """The error a worker raises for ``exc``: its message, marked so the launcher can find it."""
    return RuntimeError(f"{MARK}{json.dumps(str(exc))}{MARK}")


def user_error_in(exc: BaseException) -> UserError | None:
    """The marked UserError a worker raised, found in the runner's error (its text or its causes)."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, UserError):
            return e
        text = "".join(traceback.format_exception_only(type(e), e)) + str(e)
        found = _FOUND.search(text)
        if found:
            try:
                return UserError(json.loads(found.group(1)))
            except ValueError:
                return UserError(found.group(1))
        todo += [e.__cause__, e.__context__]
    return None


@contextlib.contextmanager
def user_errors_from_workers():
    """Run a pipeline; a worker's marked UserError comes out as that UserError."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised as it was unless a worker marked it
        found = user_error_in(exc)
        if found is None:
            raise
        raise found from None
