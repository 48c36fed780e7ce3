"""Settings for the whole test suite."""

from __future__ import annotations

import os

# Every reuse of the placement view kept across entries is compared with a fresh build of the state
# (fedraft.consensus.handlers.placement): a difference raises InvariantBroken. Node processes started
# by integration tests inherit it.
os.environ.setdefault("FEDRAFT_CHECK_VIEW", "1")
