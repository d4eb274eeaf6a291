"""Worker processes for a stage's parallel work: one pool the project controls, never statsforecast's own.

Why not `StatsForecast(n_jobs=k)`: it forks a `multiprocessing.Pool` inside the calling process and leaves it
with `Pool.__exit__`, i.e. `terminate()`. Under Prefect that process runs a flow, whose engine installs a
SIGTERM handler raising `TerminationSignal`; the forked workers inherit it. `terminate()` first takes the pool's
task-queue lock itself (`_help_stuff_finish`), so a worker looping back for its next task blocks on that lock, and
then sends every worker SIGTERM and joins them. With the default disposition the kernel ends such a worker
wherever it is. With a Python-level handler the signal only sets a flag: a worker that receives it between its
last check of that flag and the `sem_wait` of the lock sleeps on the lock for ever, and `join` never returns
(reproduced: the main process in `Pool.terminate -> join`, a worker in `SimpleQueue.get -> SemLock.__enter__`);
the workers the handler does reach print a `TerminationSignal` traceback.

What runs instead (`worker_pool`, `map_in_order`):
- loky's `ProcessPoolExecutor` (the engine behind joblib): each worker is a fresh interpreter (fork + exec), so it
  inherits no signal handler, lock or thread of the orchestrator; the initializer also resets SIGTERM to its
  default and ignores SIGINT (Ctrl-C reaches the parent, which stops the pool).
- A normal end sends each worker a sentinel and waits: no worker is ever signalled at a lock. A worker that dies
  raises `TerminatedWorkerError` in the parent instead of hanging.
- Any exception in the parent while the pool is open (a stage time-out, Ctrl-C, a failed chunk) kills every
  worker (SIGKILL) before it propagates: a stopped stage leaves no process behind.
- One pool per stage run, fed chunk after chunk, instead of a pool per statsforecast call: workers start once.
  Results come back in submission order, so the output does not depend on which worker finished first.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

#: Native thread pools inside a worker: the workers are the parallelism, one core each.
_SINGLE_THREADED = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "POLARS_MAX_THREADS": "1",
}


class WorkerDied(RuntimeError):
    """A worker process ended without returning its result: killed (e.g. by the kernel's out-of-memory killer) or
    crashed. The pool is broken; `worker_pool` kills the other workers on the way out."""


def worker_count(n_jobs: int) -> int:
    """Processes for `n_jobs` (config `backtest.n_jobs`): -1 (or 0) means every core this process may use
    (`loky.cpu_count`: CPU affinity and cgroup quotas included)."""
    if n_jobs > 0:
        return n_jobs
    from loky import cpu_count

    return max(cpu_count(), 1)


def _init_worker() -> None:
    """Default SIGTERM (the kernel ends the worker at once), SIGINT ignored (the parent handles Ctrl-C)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def worker_pool(n_jobs: int) -> Iterator[Executor | None]:
    """A process pool of `worker_count(n_jobs)` workers for the duration of the block; None for one process
    (the work then runs in-process: nothing to start, nothing to stop).

    Leaving the block normally waits for the workers to finish and exit; leaving it on any exception (including
    a time-out raised into the parent, KeyboardInterrupt or Prefect's TerminationSignal) kills them first.
    """
    n = worker_count(n_jobs)
    if n <= 1:
        yield None
        return
    from loky import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=n, initializer=_init_worker, env=_SINGLE_THREADED)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, kill_workers=True)
        raise
    pool.shutdown(wait=True)


def map_in_order(fn: Callable[..., T], jobs: Iterable[tuple[Any, ...]], pool: Executor | None, in_flight: int = 4) -> Iterator[T]:
    """`fn(*job)` for each job, results in the order of `jobs`.

    With a pool, at most `in_flight` jobs are submitted ahead of the one being returned (the jobs iterable is
    consumed lazily, so only those jobs' inputs are in memory); without one, each runs in-process in turn.
    A job's exception is raised here, in the parent, when its turn comes.
    """
    if pool is None:
        for job in jobs:
            yield fn(*job)
        return
    pending: deque[Future[T]] = deque()
    for job in jobs:
        pending.append(pool.submit(fn, *job))
        if len(pending) >= max(in_flight, 1):
            yield _result(pending.popleft())
    while pending:
        yield _result(pending.popleft())


def _result(future: Future[T]) -> T:
    try:
        return future.result()
    except BrokenProcessPool as exc:  # loky's TerminatedWorkerError (its message has the exit codes) is one
        raise WorkerDied(
            "a worker process ended without returning its work: killed by the system (often out of memory: lower "
            "backtest.chunk_size or backtest.n_jobs) or crashed; the stage was stopped with its other workers"
        ) from exc
