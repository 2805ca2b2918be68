"""What the tools print: mmengine's warnings about its own internals stay off the console."""
import io
import logging

from mmengine.fileio import FileClient
from mmengine.logging import MMLogger

from kw_mm.runner.output import INTERNAL_DEPRECATIONS, quiet_internal_deprecations


def test_internal_deprecations_reach_the_log_file_not_the_console(tmp_path, monkeypatch):
    # FileClient reuses backends made earlier in the process; an empty cache
    # makes it build (and warn about) its disk backend whatever ran before
    monkeypatch.setattr(FileClient, '_instances', {})
    log_file = tmp_path / 'run.log'
    logger = MMLogger.get_instance('kw_mm_test_output', log_file=str(log_file))
    console = io.StringIO()
    for handler in logger.handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setStream(console)
    quiet_internal_deprecations(logger)
    filters = [len(h.filters) for h in logger.handlers]
    quiet_internal_deprecations(logger)  # idempotent: one filter per handler
    assert [len(h.filters) for h in logger.handlers] == filters
    # mmengine's CheckpointHook does this in every training run
    FileClient.infer_client(None, str(tmp_path))
    logger.warning('a warning of the run itself')
    for handler in logger.handlers:
        handler.flush()
    shown, kept = console.getvalue(), log_file.read_text()
    assert 'a warning of the run itself' in shown
    for text in INTERNAL_DEPRECATIONS:
        assert text not in shown
        assert text in kept
