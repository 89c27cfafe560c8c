"""The control token that guards every mutating call.

``TPS_CONTROL_TOKEN`` wins. Without it, TPS generates a random token at first start,
stores it in ``<data_dir>/control-token`` with mode 0600 and logs where it is and how
to print it (``tps token``; in Docker ``docker compose exec tps tps token``); later
starts (and the operator CLI) read it from there.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from tps.config.settings import Settings

logger = logging.getLogger(__name__)

TOKEN_FILE = "control-token"  # noqa: S105 - a file name, not a secret
MIN_TOKEN_CHARS = 16
"""A configured token shorter than this is warned about (a generated one has 43)."""


def token_path(data_dir: Path) -> Path:
    """Where the generated token lives."""
    return Path(data_dir) / TOKEN_FILE


def read_token_file(data_dir: Path) -> str | None:
    """The stored token, or None when there is none (or it is empty/unreadable)."""
    try:
        token = token_path(data_dir).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


def load_or_create_token(settings: Settings) -> tuple[str, Path | None]:
    """The control token and the file it came from (None when TPS_CONTROL_TOKEN is set).

    A stored token readable by others is tightened to 0600 with a warning.
    """
    if settings.control_token:
        if len(settings.control_token) < MIN_TOKEN_CHARS:
            logger.warning(
                "TPS_CONTROL_TOKEN is shorter than %d characters (%d); anyone who guesses it "
                "controls the streams. Use at least %d random characters (e.g. python -c "
                "'import secrets; print(secrets.token_urlsafe(32))'), or unset it to have TPS "
                "generate one", MIN_TOKEN_CHARS, len(settings.control_token), MIN_TOKEN_CHARS)
        return settings.control_token, None
    data_dir = settings.data_dir
    path = token_path(data_dir)
    existing = read_token_file(data_dir)
    if existing is not None:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
            logger.warning("Control token file %s was mode %o; tightened it to 0600", path, mode)
        logger.info("Control token in %s; print it with %s", path, _print_hint(data_dir))
        return existing, path
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{TOKEN_FILE}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    # Expected on every first start: an event to note, not a problem to act on.
    logger.info(
        "Generated a control token in %s (mode 0600); print it with %s, send it as "
        "'Authorization: Bearer <token>', or set TPS_CONTROL_TOKEN instead",
        path, _print_hint(data_dir),
    )
    return token, path


def _print_hint(data_dir: Path) -> str:
    """How an operator prints the token (in a container: through ``docker compose exec``)."""
    command = f"'tps token --data-dir {data_dir}'"
    if Path("/.dockerenv").exists():
        command += " (from the host: 'docker compose exec tps tps token')"
    return command
