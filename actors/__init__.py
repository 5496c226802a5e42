"""The actor runtime (mailbox, tell/ask, supervisors, registry) and the live actors.

Imports only the standard library, Trio and ``protocols``; every actor gets its
I/O handed in as small interfaces, so it runs in a test without a server.
"""

from actors.errors import (
    ActorCrashed,
    ActorError,
    ActorStopped,
    AskTimeout,
    ChildStartFailed,
    DuplicateChild,
    MailboxFull,
    RestartIntensityExceeded,
    RunsElsewhere,
    SupervisorNotRunning,
)
from actors.metrics import ActorMetrics, RestartEvent
from actors.registry import ActorGate, ActorKind, Registry
from actors.reply import OneShot
from actors.runtime import Actor, ActorRef
from actors.supervisor import ActorSpec, RestartIntensity, Supervisor, SupervisorSpec

__all__ = [
    "Actor",
    "ActorCrashed",
    "ActorError",
    "ActorGate",
    "ActorKind",
    "ActorMetrics",
    "ActorRef",
    "ActorSpec",
    "ActorStopped",
    "AskTimeout",
    "ChildStartFailed",
    "DuplicateChild",
    "MailboxFull",
    "OneShot",
    "Registry",
    "RestartEvent",
    "RestartIntensity",
    "RestartIntensityExceeded",
    "RunsElsewhere",
    "Supervisor",
    "SupervisorNotRunning",
    "SupervisorSpec",
]
