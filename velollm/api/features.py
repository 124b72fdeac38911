"""What the server can honour today; requests for anything else get a clear 400, never silent ignoring.

The tool-calling / structured-output work widens these sets when the engine supports more.
"""

from __future__ import annotations

# StructuredOutput kinds the API passes to the engine (json_schema waits for the grammar backend).
STRUCTURED_OUTPUT_KINDS = frozenset({"json_object"})
# OpenAI tool_choice values accepted ("required" and a named function need constrained decoding).
TOOL_CHOICES = frozenset({"none", "auto"})
# Largest n (choices per request) and number of prompts in one /v1/completions request.
MAX_N = 128
MAX_PROMPTS = 1024
