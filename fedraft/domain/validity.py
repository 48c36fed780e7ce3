"""Envelope validity windows and effective time (SPEC D3, D6)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_VALIDITY_MS = 5 * 60 * 1000
DEFAULT_MAX_TIME_STEP_MS = 60 * 1000
# An envelope issued this far in the future of the judging clock is refused (clock skew allowance).
ISSUE_SKEW_MS = 30 * 1000


@dataclass(frozen=True)
class Window:
    issued_at_ms: int
    expires_at_ms: int


def window_problem(window: Window, now_ms: int, max_validity_ms: int = DEFAULT_MAX_VALIDITY_MS) -> str | None:
    """Why the window is not acceptable at `now_ms`, or None when it is."""
    if window.expires_at_ms <= window.issued_at_ms:
        return "expires_at_ms must be after issued_at_ms"
    if window.expires_at_ms - window.issued_at_ms > max_validity_ms:
        return f"validity window longer than {max_validity_ms} ms"
    if window.issued_at_ms > now_ms + ISSUE_SKEW_MS:
        return "issued in the future (check the client's clock)"
    if window.expires_at_ms <= now_ms:
        return "expired"
    return None


def effective_time(leader_time_ms: int, prev_effective_ms: int, max_step_ms: int = DEFAULT_MAX_TIME_STEP_MS) -> int:
    """clamp(leader_time, prev, prev + max_step); the first entry (prev 0) takes the leader's time."""
    if prev_effective_ms == 0:
        return leader_time_ms
    return min(max(leader_time_ms, prev_effective_ms), prev_effective_ms + max_step_ms)
