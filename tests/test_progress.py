"""Logging set-up."""

from __future__ import annotations

import logging


def test_log_into_missing_folder_is_created(tmp_path):
    from channel_ssl.progress import setup_logging

    log_file = tmp_path / "new" / "deeper" / "step.log"
    setup_logging(str(log_file))
    logging.getLogger("channel_ssl").info("hello")
    assert "hello" in log_file.read_text()
    setup_logging(None)
