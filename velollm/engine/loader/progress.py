"""Progress of a weight stream: tensors and bytes materialised, with the rate, as log records.

The model runner wraps `source.iter_weights()` in `track_progress`; anyone who wants to draw it (the
`run` command's progress bar, `serve`'s log) reads the `load_progress` attribute of the records of this
module's logger. No callback threads through the engine's constructors. Each tensor is also where a load
asked to stop does (load_stop.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from velollm.engine.loader.load_stop import check_stop

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)
REPORT_EVERY_S = 1.0


@dataclass(frozen=True)
class LoadProgress:
    model: str
    num_tensors: int
    num_bytes: int  # of the tensors as loaded (in the compute dtype, on the device)
    num_params: int  # elements loaded so far
    total_params: int  # the model's parameter count (0 when unknown)
    seconds: float
    done: bool = False

    @property
    def fraction(self) -> float | None:
        """Share of the parameters loaded (tied embeddings load once, so the end may fall short of 1)."""
        if self.done:
            return 1.0
        return min(self.num_params / self.total_params, 1.0) if self.total_params else None

    @property
    def bytes_per_s(self) -> float:
        return self.num_bytes / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        share = f"{self.fraction:.0%}, " if self.fraction is not None and not self.done else ""
        verb = "loaded" if self.done else "loading"
        return (f"{verb} {self.model}: {share}{self.num_tensors} tensors, {self.num_bytes / 1e6:,.1f} MB in "
                f"{self.seconds:.1f} s ({self.bytes_per_s / 1e6:,.0f} MB/s)")


def track_progress(weights: Iterable[tuple[str, torch.Tensor]], model: str,
                   total_params: int) -> Iterator[tuple[str, torch.Tensor]]:
    """Pass `weights` through, logging a LoadProgress every REPORT_EVERY_S and once at the end."""
    start = last = time.perf_counter()
    num_tensors = num_bytes = num_params = 0
    for name, tensor in weights:
        check_stop()  # a load asked to stop (load_stop.py) stops at the next tensor
        yield name, tensor
        num_tensors += 1
        num_bytes += tensor.nbytes  # a GGUF QuantizedWeight counts its planes
        num_params += tensor.numel()
        now = time.perf_counter()
        if now - last >= REPORT_EVERY_S:
            last = now
            _emit(LoadProgress(model, num_tensors, num_bytes, num_params, total_params, now - start))
    _emit(LoadProgress(model, num_tensors, num_bytes, num_params, total_params, time.perf_counter() - start, True))


def _emit(progress: LoadProgress) -> None:
    logger.info("%s", progress.describe(), extra={"load_progress": progress})
