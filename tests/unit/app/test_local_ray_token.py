"""`make run`'s Ray token: written before Ray would write it with the umask's mode, private, never printed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from app import local_ray_token


def test_the_ray_token_is_written_once_private_in_rays_form_and_never_printed(tmp_path: Path, capsys) -> None:
    path = tmp_path / ".ray" / "auth_token"
    environ = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}
    assert local_ray_token.main(environ) == 0
    token = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) == 64 and int(token, 16) >= 0  # as Ray writes it: 256 bits in hex, no line break
    assert local_ray_token.main(environ) == 0 and path.read_text() == token  # kept
    output = capsys.readouterr().err
    assert f"Ray token: generated {path} (mode 0600)" in output and token not in output


@pytest.mark.parametrize("mode", ["token", None])  # unset: Ray's default for a new local cluster is token
def test_a_ray_token_others_can_read_is_kept_and_made_private(tmp_path: Path, capsys, mode: str | None) -> None:
    """Ray writes the file with the umask's mode (0644 on most machines) when it is first to write it."""
    path = tmp_path / "auth_token"
    path.write_text("theirs")
    path.chmod(0o644)
    environ = {"RAY_AUTH_TOKEN_PATH": str(path), **({"RAY_AUTH_MODE": mode} if mode else {})}
    assert local_ray_token.main(environ) == 0
    assert path.read_text() == "theirs" and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "made private (0600)" in capsys.readouterr().err


@pytest.mark.parametrize("environ", [{"RAY_AUTH_MODE": "disabled"},
                                     {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "from-env"},
                                     {"RAY_ADDRESS": "ray://head:10001"}])  # the joined cluster's token
def test_no_file_is_written_where_ray_reads_none(tmp_path: Path, environ: dict[str, str]) -> None:
    path = tmp_path / "auth_token"
    assert local_ray_token.main({**environ, "RAY_AUTH_TOKEN_PATH": str(path)}) == 0
    assert not path.exists()


def test_an_unwritable_token_path_is_a_clear_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "file" / "auth_token"
    assert local_ray_token.main({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}) == 2
    assert "cannot be written or read" in capsys.readouterr().err


def test_an_empty_token_file_is_replaced_by_a_token(tmp_path: Path) -> None:
    """An empty file (a write cut short, before tokens were written whole) was reported as the token."""
    path = tmp_path / "auth_token"
    path.write_text("")
    assert local_ray_token.main({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path)}) == 0
    assert len(path.read_text()) == 64 and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_token_write_that_fails_leaves_no_file_behind(tmp_path: Path, monkeypatch) -> None:
    """Regression (review): the file was created before its token was written, so a full disk or a crash left an
    empty file that every later start took for the token."""
    import os

    from core import private_file

    def full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(private_file.os, "fsync", full)
    path = tmp_path / "auth_token"
    with pytest.raises(OSError, match="No space"):
        private_file.write_private(path, "secret")
    assert os.listdir(tmp_path) == []


def test_a_file_system_without_hard_links_still_gets_its_token(tmp_path: Path, monkeypatch) -> None:
    """The token is linked into place; where links are refused (some network file systems), it is written in place."""
    import os

    from core import private_file

    def no_links(source, target):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(private_file.os, "link", no_links)
    path = tmp_path / "auth_token"
    assert private_file.write_private(path, "secret") and path.read_text() == "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and os.listdir(tmp_path) == ["auth_token"]
    assert not private_file.write_private(path, "other") and path.read_text() == "secret"


def test_a_link_refused_for_another_reason_or_an_in_place_write_that_fails_leaves_no_token(tmp_path: Path,
                                                                                              monkeypatch) -> None:
    """Regression: any link error fell back to writing in place, and a write that then failed left an empty or
    partial token that later starts kept."""
    import os

    from core import private_file

    def io_error(source, target):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(private_file.os, "link", io_error)
    path = tmp_path / "auth_token"
    with pytest.raises(OSError, match="Input/output"):
        private_file.write_private(path, "secret")
    assert os.listdir(tmp_path) == []

    def no_links(source, target):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(private_file.os, "link", no_links)
    fsyncs = []

    def full_on_the_second(descriptor: int) -> None:  # the staging copy is synced, then the in-place one fails
        fsyncs.append(descriptor)
        if len(fsyncs) == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(private_file.os, "fsync", full_on_the_second)
    with pytest.raises(OSError, match="No space"):
        private_file.write_private(path, "secret")
    assert os.listdir(tmp_path) == []
