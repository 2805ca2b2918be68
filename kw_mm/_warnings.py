"""Filters for messages the toolboxes repeat, installed when kw_mm is imported.

Both concern code outside kw_mm and nothing a kw_mm user does; printed again and again they
bury what the tools report.

* ``mmengine.utils.is_installed`` imports ``pkg_resources`` (setuptools) and reloads it on every
  call, and mmengine calls it whenever it resolves a package (configs with ``mmpretrain::`` or
  ``mmdet::`` bases, registry scopes), so setuptools' deprecation warning ("pkg_resources is
  deprecated as an API") comes again for every model a tool builds. The supported setuptools is
  pinned below the version that removes the module (``requirements/runtime.txt``).
* torch's profiler (kineto), which the memory measurements start for every step they measure,
  prints a line at every start and stop and, on a CUDA build of torch without a GPU, an error
  about the device count. Kineto reads ``KINETO_LOG_LEVEL`` when the profiler is first used;
  kw_mm sets it to 6 (nothing), unless it is set already.
"""
import os
import warnings

#: ``(message regex, category)`` of the Python warnings kw_mm silences.
QUIET = (('pkg_resources is deprecated', UserWarning), )
#: Kineto's log level above its highest message type (0 verbose ... 5 trace points).
KINETO_SILENT = '6'


def quiet_toolbox_warnings() -> None:
    """Install the filters of :data:`QUIET` and silence kineto unless the user set its level
    (idempotent: ``warnings`` drops duplicate filters)."""
    for message, category in QUIET:
        warnings.filterwarnings('ignore', message=message, category=category)
    os.environ.setdefault('KINETO_LOG_LEVEL', KINETO_SILENT)
