"""Test-only fault injection for child processes (the real CLI, its Ray workers), loaded at interpreter start.

Tests that need it put this directory on PYTHONPATH (tests/conftest.py: HOOKS_DIR) and set
ARFSCORE_TEST_PAUSE_BEFORE_COMMIT=<seconds>: every shard file is then held complete under its temp name for that
long before the rename that commits it, so a test can kill a run mid-write deterministically. Production code has
no hook: this wraps tasks.storage.commit_temp_file from outside.
"""

import os

_PAUSE = os.environ.get("ARFSCORE_TEST_PAUSE_BEFORE_COMMIT")

if _PAUSE:
    import time

    import tasks.storage as _storage

    _commit = _storage.commit_temp_file

    def _paused_commit(temp, final, fs):
        if final.rsplit("/", 1)[-1].startswith("shard="):
            time.sleep(float(_PAUSE))
        _commit(temp, final, fs)

    _storage.commit_temp_file = _paused_commit
