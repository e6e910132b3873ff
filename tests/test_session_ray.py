"""The test session's own Ray setup (tests/conftest.py): its token and folder, and the processes it ends."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import _RAY_FOLDER, OUTSIDE_AUTH_MODE, _left_running


def test_the_session_s_rays_run_under_its_own_private_token_in_its_own_folder(request):
    """One folder, whichever copy of tests/conftest.py asks: pytest's own and the one `from tests.conftest import`
    makes (a second copy made a second folder, took the environment over, and was never removed). The token is
    written whatever the mode, so that a Ray in token mode never writes one into ~/.ray."""
    plugin = request.config.pluginmanager.get_plugin(str(Path(__file__).parent / "conftest.py"))
    assert plugin is not None and plugin._RAY_FOLDER == _RAY_FOLDER
    assert os.environ["RAY_AUTH_MODE"] == (os.environ[OUTSIDE_AUTH_MODE] or "token")  # a mode set outside wins
    assert os.environ["RAY_TMPDIR"] == str(_RAY_FOLDER)
    token = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    assert token.parent == _RAY_FOLDER and stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text()) == 64


def test_a_process_the_session_s_rays_left_running_is_found_by_its_folder_and_no_other(tmp_path):
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            env={**os.environ, "RAY_TMPDIR": str(tmp_path)})
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env={**os.environ, "RAY_TMPDIR": str(tmp_path / "elsewhere")})
    try:
        assert _left_running(tmp_path) == [ours.pid]
    finally:
        for process in (ours, other):
            process.kill()
            process.wait()
