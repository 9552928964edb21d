"""Parallel blocks: the sweeps cut into blocks of whole wedges, integrated independently and
summed (DESIGN §15).

A :class:`BlockTask` carries what a worker needs to integrate its frames from the files
(geometry, static mask, thresholds, Bragg model): the worker builds its own pixel table and reads
its own frames, so no frame ever travels through a scheduler. Results are summed with the
accumulator record's canonical summation, so they equal a single pass over the same frames.

Where blocks run: in this process (the compiled ``cpu`` engine is multi-threaded itself; the
``cuda`` engine owns the GPU), in a local process pool (``numpy`` engine with ``nproc`` > 1), or
on Dask distributed (``scheduler`` address, or a LocalCluster of ``dask_workers`` processes).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from ..errors import DeviceError, ImageError, UsageError
from .driver import integrate_sweep
from .pixels import prepare_pixels
from .record import IntegrationResult

__all__ = ["BlockTask", "run_block", "run_blocks", "load_background", "background_exposure", "Execution"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Execution:
    """How to run the streaming pass: engine name; nproc (CPU threads or processes; None = all
    cores); scheduler (Dask address) or dask_workers (LocalCluster size)."""

    engine: str = "cpu"
    nproc: int | None = None
    scheduler: str | None = None
    dask_workers: int | None = None

    def __post_init__(self):
        if self.nproc is not None and self.nproc < 1:
            raise DeviceError(f"--nproc must be at least 1, got {self.nproc}")
        if self.dask_workers is not None and self.dask_workers < 1:
            raise DeviceError(f"--dask-workers must be at least 1, got {self.dask_workers}")
        if self.scheduler and self.dask_workers:
            raise UsageError("give either --scheduler or --dask-workers, not both")

    @property
    def uses_dask(self) -> bool:
        return bool(self.scheduler or self.dask_workers)

    @property
    def cores(self) -> int:
        return self.nproc or os.cpu_count() or 1

    @property
    def blocks_per_sweep(self) -> int:
        """Blocks to cut each sweep into: a few per Dask worker, one per process of the NumPy
        engine's pool, else one (the compiled engines parallelise within a chunk)."""
        if self.dask_workers:
            return 2 * self.dask_workers
        if self.scheduler:
            return 16
        return self.cores if self.engine == "numpy" else 1


@dataclass(frozen=True)
class BlockTask:
    """One block of frames of one sweep, with everything needed to integrate it from the files."""

    sweep: object
    mask: np.ndarray
    dmin: float
    grid: object
    params: object                  # IntegrationParameters
    frames: np.ndarray              # 0-based frame numbers of the block (whole wedges)
    engine: str = "cpu"
    threshold: object = None        # ThresholdProfile or None
    peak_model: object = None
    absent: np.ndarray | None = None
    background: str | None = None   # background run template
    threads: int | None = None      # numba threads in the worker


def run_block(task: BlockTask) -> IntegrationResult:
    """Integrate one block (runs in a worker process or in this one)."""
    if task.threads and task.engine == "cpu":
        import numba  # noqa: PLC0415

        numba.set_num_threads(min(task.threads, numba.config.NUMBA_NUM_THREADS))
    pixels = prepare_pixels(task.sweep, task.mask, task.dmin, task.threshold, air=task.params.air)
    background = None
    if task.background:
        rate, var = load_background(task.background, task.sweep, task.mask)
        background = (rate[pixels.index], var[pixels.index])
    return integrate_sweep(task.sweep, pixels, task.grid, task.peak_model, task.absent, task.params, task.engine,
                           background, frames=task.frames)


def run_blocks(tasks: list[BlockTask], execution: Execution, progress_bar=None) -> IntegrationResult:
    """Run the tasks where ``execution`` says and sum their results in task order."""
    def done(task):
        if progress_bar is not None:
            progress_bar.update(len(task.frames))

    if execution.uses_dask:
        return _run_dask(tasks, execution, done)
    if execution.engine == "numpy" and execution.cores > 1 and len(tasks) > 1:
        import multiprocessing  # noqa: PLC0415
        from concurrent.futures import ProcessPoolExecutor  # noqa: PLC0415

        # spawn, not fork: the parent may hold JAX/threads that do not survive a fork
        with ProcessPoolExecutor(min(execution.cores, len(tasks)), mp_context=multiprocessing.get_context("spawn")) \
                as pool:
            futures = [pool.submit(run_block, t) for t in tasks]
            results = []
            for task, future in zip(tasks, futures):
                results.append(future.result())
                done(task)
        return IntegrationResult.sum(results)
    if execution.engine == "cpu":
        import numba  # noqa: PLC0415

        numba.set_num_threads(min(execution.cores, numba.config.NUMBA_NUM_THREADS))
    results = []
    for task in tasks:
        results.append(run_block(task))
        done(task)
    return IntegrationResult.sum(results)


def _run_dask(tasks, execution, done):
    try:
        from distributed import Client, LocalCluster, as_completed  # noqa: PLC0415
    except ImportError as exc:
        raise DeviceError("Dask is not installed: pip install 'gpudiffuse[dask]'") from exc
    cluster = None
    if execution.scheduler:
        try:
            client = Client(execution.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise DeviceError(f"--scheduler {execution.scheduler}: cannot connect ({exc})") from exc
    else:
        cluster = LocalCluster(n_workers=execution.dask_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
        threads = max(1, (os.cpu_count() or 1) // execution.dask_workers)
        tasks = [BlockTask(**{**t.__dict__, "threads": threads}) for t in tasks]
    try:
        logger.info("Dask: %d blocks on %s", len(tasks), client.scheduler.address)
        futures = client.map(run_block, tasks, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            future.result()  # raise a worker's error here
            done(tasks[index[future.key]])
        results = client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return IntegrationResult.sum(results)


def load_background(template, sweep, mask):
    """Per-pixel background rate (counts/s) and its variance from a background run (flat arrays)."""
    from ..io.images import expand_template, read_image  # noqa: PLC0415
    from ..masking.pixel import frame_valid  # noqa: PLC0415

    total = np.zeros(mask.shape)
    time = np.zeros(mask.shape)
    for _, path in expand_template(template):
        data = read_image(path)
        if data.shape != mask.shape:
            raise ImageError(f"background frame {path} is {data.shape[1]}x{data.shape[0]} pixels but the data "
                             f"frames are {mask.shape[1]}x{mask.shape[0]}")
        t = background_exposure(path)
        valid = frame_valid(data, sweep.panel.trusted_range) & (data >= 0)
        total += np.where(valid, data, 0)
        time += np.where(valid, t, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(time > 0, total / time, 0.0)
        var = np.where(time > 0, total / time**2, 0.0)
    return rate.ravel(), var.ravel()


def background_exposure(path: str) -> float:
    """The exposure time (s) of a background frame; no silent default."""
    from ..geometry.cbf_header import read_pilatus_header  # noqa: PLC0415

    try:
        t = read_pilatus_header(path).get("exposure_time")
    except ImageError:
        t = None
    if t is None or not np.isfinite(t) or t <= 0:
        raise ImageError(f"background frame {path}: no positive Exposure_time in its header (got {t}); "
                         "the background rate needs it")
    return float(t)
