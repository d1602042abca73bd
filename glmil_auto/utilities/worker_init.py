"""Initializer of the process pools that read and resample images (synthetic generation,
fingerprint, preprocessing, prediction inputs, radiomics features).

- One SimpleITK thread per worker, because the pool already runs one worker per core and nested
  threads would oversubscribe them.
- A watchdog: a parent killed with ``kill -9`` cannot shut its pool down, and its workers would
  keep running (and holding memory) as orphans. Each worker exits as soon as the process that
  started it is gone.
"""

from __future__ import annotations

import os
import threading
import time

PARENT_CHECK_SECONDS = 1.0


def _exit_with_parent(parent_pid: int, sentinel: int | None, interval: float) -> None:
    if sentinel is not None:  # multiprocessing's pipe to the parent: ready exactly when the parent is gone
        from multiprocessing.connection import wait

        wait([sentinel])
        os._exit(1)
    while True:
        if os.getppid() != parent_pid:  # re-parented: the parent died without closing the pool
            os._exit(1)
        time.sleep(interval)


def exit_when_parent_dies(interval: float = PARENT_CHECK_SECONDS) -> None:
    """Start this process's watchdog thread (a daemon). The parent is the process that created the
    pool (``multiprocessing.parent_process()``), not whatever ``getppid`` says now: a parent killed
    while this worker was still importing has already been replaced by init."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    parent_pid = parent.pid if parent is not None else os.getppid()
    sentinel = getattr(parent, "sentinel", None) if parent is not None else None
    threading.Thread(target=_exit_with_parent, args=(parent_pid, sentinel, interval), daemon=True,
                     name="exit-with-parent").start()


def single_threaded_images() -> None:
    """One SimpleITK thread in this process (also for in-process work that stands in for a pool)."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def single_threaded_image_worker() -> None:
    """Pool initializer: one SimpleITK thread and the parent watchdog. Only for pool workers."""
    single_threaded_images()
    exit_when_parent_dies()
