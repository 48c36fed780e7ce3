"""One exception family for fedraft. Each error says whose fault it is, so a caller can decide
whether to retry, fix its input, page an operator, or file a bug."""

from __future__ import annotations

from enum import Enum


class Fault(Enum):
    CALLER = "caller"  # bad input, bad signature, not allowed: fix the request
    PEER = "peer"  # another node misbehaved or is unreachable
    OPERATOR = "operator"  # configuration, files, keys, disk: fix the deployment
    BUG = "bug"  # an invariant broke: report it


class FedraftError(Exception):
    """Base of every error fedraft raises on purpose."""

    fault: Fault = Fault.BUG

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class CallerError(FedraftError):
    fault = Fault.CALLER


class PeerError(FedraftError):
    fault = Fault.PEER


class OperatorError(FedraftError):
    fault = Fault.OPERATOR


class InvariantBroken(FedraftError):
    fault = Fault.BUG


class ConfigError(OperatorError):
    """A config, genesis, profile or key file is missing or malformed."""


class SignatureError(CallerError):
    """A signature, key id or signed body does not verify."""


class DecodeError(CallerError):
    """Bytes from outside do not decode into the expected message."""


class Unavailable(PeerError):
    """No leader, no quorum, or the node is in lockdown; retry elsewhere or later."""

    def __init__(self, message: str, *, leader_hint: str = "", hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.leader_hint = leader_hint
