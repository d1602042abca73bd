"""Initializer of the process pools that read and resample images (synthetic generation,
fingerprint, preprocessing, prediction inputs): one SimpleITK thread per worker, because the
pool already runs one worker per core and nested threads would oversubscribe them."""

from __future__ import annotations


def single_threaded_image_worker() -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
