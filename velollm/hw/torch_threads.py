"""One torch intra-op thread for a worker thread, the process's count left as it was for every other thread.

torch.set_num_threads sets the calling thread's OpenMP team size and also the process-wide count that a thread
reads at its first parallel op: a worker that sets 1 for itself would leave every thread started after it (an
engine's step thread, a model loaded on demand) on one thread too. The initializer here puts the process-wide
count back at once, from a thread of its own, so that only the worker keeps its one thread. A thread whose first
parallel op falls between the two calls would run on one thread: the window is one thread start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


def one_intra_op_thread() -> Callable[[], None]:
    """A worker's initializer (ThreadPoolExecutor's `initializer`): its torch ops on one thread. The count to put
    back is read here, on the thread that makes the pool, before any worker has set its own."""
    import torch  # not at import: hw is read by `velollm detect` and --proxy-only without torch's start-up cost

    restore = torch.get_num_threads()

    def init() -> None:
        torch.get_num_threads()  # this thread's own first read of the process-wide count, before it is set
        torch.set_num_threads(1)
        resetter = threading.Thread(target=torch.set_num_threads, args=(restore,), name="velollm-torch-threads")
        resetter.start()
        resetter.join()

    return init
