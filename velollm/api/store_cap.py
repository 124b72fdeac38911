"""The per-row cap of the store (`--responses-max-row-size`, velollm/responses/row_size.py) as the API keeps it.

A row over the cap is not stored, and the client can tell. `store: true` asked by name with an input that is
already over it is a 400 before any generation: the client asked for what cannot be done, and would otherwise
learn it only when a retrieve 404s (a chat completion has no `store` field to say so). A row found over only
once answered (the answer pushed it over), or a Response stored by default (`store` not sent), is answered
and not stored: the Response object says `store: false`, a retrieve is a 404. Either way a warning names
the row and `velollm_store_rows_skipped_total{store, outcome}` counts it.
"""

from __future__ import annotations

import logging

from velollm.api.handler import AppState
from velollm.responses import RowTooLarge
from velollm.wire.errors import APIError

logger = logging.getLogger(__name__)

_WHAT = {"responses": "response", "chat_completions": "chat completion"}


def over_cap(state: AppState, num_bytes: int) -> bool:
    return num_bytes > state.config.responses_max_row_bytes


def refuse(state: AppState, store: str, num_bytes: int) -> APIError:
    """The 400 for `store: true` with an input of `num_bytes` as stored, over the cap."""
    cap = state.config.responses_max_row_bytes
    state.metrics.observe_store_skip(store, "refused")
    logger.warning("%s refused: store: true with an input of %d bytes as stored, over the row cap of %d "
                   "(--responses-max-row-size)", _WHAT[store], num_bytes, cap)
    return APIError(400, f"Invalid 'store': this request's input takes {num_bytes} bytes as stored, over this "
                         f"server's limit of {cap} bytes for a stored {_WHAT[store]} (--responses-max-row-size). "
                         "Send it with store: false, or with a smaller input.", param="store",
                    code="stored_row_too_large")


def unstored(state: AppState, store: str, row_id: str, exc: RowTooLarge | int) -> None:
    """A row answered and not stored for its size (`exc`: the store's RowTooLarge, or the input's bytes)."""
    num_bytes = exc.num_bytes if isinstance(exc, RowTooLarge) else exc
    state.metrics.observe_store_skip(store, "unstored")
    logger.warning("%s %s not stored: %d bytes as stored, over the row cap of %d (--responses-max-row-size)",
                   _WHAT[store], row_id, num_bytes, state.config.responses_max_row_bytes)


def write_failed(state: AppState, row_id: str) -> None:
    """A response's end the store could not write (tried twice: responses_background.keep_end, which logged why):
    answered failed, or held by its background run. Counted, as the rows skipped for their size are."""
    state.metrics.observe_store_skip("responses", "write_failed")
    logger.warning("response %s not stored as it ended: the store could not write it", row_id)
