"""fedraft: the control plane of a federation of compute pools, on a signed, replicated Raft log."""

__version__ = "0.1.0"
