"""Errors raised by the actor runtime to the code that talks to actors."""

from __future__ import annotations


class ActorError(Exception):
    """Base of every error the actor runtime raises."""


class MailboxFull(ActorError):
    """``tell`` found the actor's bounded mailbox full; the message was not queued."""


class ActorStopped(ActorError):
    """The actor is stopping or stopped: its mailbox takes no more messages, or the
    message was still queued (or being handled) when the actor went away."""


class AskTimeout(ActorError, TimeoutError):
    """No reply within the ask's timeout. The outcome is unknown: the message may
    still be queued and be handled later (its reply is then dropped)."""


class ActorCrashed(ActorError):
    """The actor raised while handling this ask. ``cause`` (also ``__cause__``) is
    the exception; the actor itself crashed and is restarted by its supervisor."""

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.__cause__ = cause


class ChildStartFailed(ActorError):
    """A child's first start failed (its factory or ``on_start`` raised). A first
    start is not retried: the caller decides. ``__cause__`` is the exception."""


class RestartIntensityExceeded(ActorError):
    """A supervisor saw more restarts than its intensity allows within its period:
    it stopped all its children and fails, escalating to its parent."""


class SupervisorNotRunning(ActorError):
    """A child was added to a supervisor that is not running (or is stopping)."""


class DuplicateChild(ActorError):
    """A supervisor already has a child with this id."""


class RunsElsewhere(ActorError):
    """The actor may not start in this process: another process runs it (``node``: that process's id in the
    cluster). The caller forwards its request there, or answers that the device is unavailable."""

    def __init__(self, message: str, node: int) -> None:
        super().__init__(message)
        self.node = node
