"""The OpenAI Responses API (`/v1/responses`) as a layer over chat completions.

A request (request.py) becomes a chat body (chat_body.py, items.py); what the chat side answers,
whole or as chunks, becomes the Response object (response_object.py) or its typed stream events
(event_stream.py); a compaction item (compaction.py) carries the summary of a compacted conversation
back into the prompt; a cached Response is answered again through the same path (replay.py). Stored
responses live in an SQLite file (store.py; legacy_store.py converts the layout before), and in the
same file the stored chat completions (`store: true` on /v1/chat/completions: chat_store.py), each row under
a size cap (row_size.py), the whole file under another (store_size.py). Background responses' runs and their
events (background.py) live in memory. Used by
the native API and by the proxy (for upstreams without /v1/responses); it imports neither.
"""

from velollm.responses.chat_body import chat_body, conversation
from velollm.responses.chat_store import ChatCompletionStore, CompletionPage, UnknownCursor
from velollm.responses.event_stream import ResponseEventStream, sse_frame
from velollm.responses.items import input_item_objects, items_to_messages, output_items
from velollm.responses.replay import replay_chunks
from velollm.responses.request import ResponsesRequest, parse_responses_request
from velollm.responses.response_object import ResponseShell, usage_from_chat
from velollm.responses.row_size import RowTooLarge, stored_bytes
from velollm.responses.store import History, ResponseStore

__all__ = ["ChatCompletionStore", "CompletionPage", "History", "ResponseEventStream", "ResponseShell",
           "ResponseStore", "ResponsesRequest", "RowTooLarge", "UnknownCursor", "chat_body", "conversation",
           "input_item_objects", "items_to_messages", "output_items", "parse_responses_request",
           "replay_chunks", "sse_frame", "stored_bytes", "usage_from_chat"]
