"""Run last: nothing the app or Celery did in this session broke the production Redis ACL.

Both test Redis instances enforce the production users (keys ~parley:*, channels &parley:*,
no @dangerous commands); a violation is refused there and recorded in ACL LOG.
"""

from __future__ import annotations

import subprocess

from tests.processes import VENV_BIN


def test_no_acl_violations_and_every_key_under_parley(redis_admin, worker) -> None:
    # Remote control must work through the ACL too.
    ping = subprocess.run(
        [str(VENV_BIN / "celery"), "-A", "parley", "inspect", "ping", "--timeout", "5"],
        cwd=str(VENV_BIN.parent.parent), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "pong" in ping.stdout
    for role, client in redis_admin.items():
        assert client.acl_log() == [], f"ACL violations on the {role} instance"
        keys = [key.decode() for key in client.scan_iter(count=1000)]
        assert keys, f"nothing was written to the {role} instance"
        assert all(key.startswith("parley:") for key in keys), keys
