"""Malformed (and some well-formed) tool-call outputs with the outcome each must get.

Each case: (id, family, model text, expected outcomes in order, expected calls as (name, arguments)).
"""

from __future__ import annotations

from velollm.tools.tool_parsers import ToolFamily

H, L, M = ToolFamily.HERMES, ToolFamily.LLAMA3, ToolFamily.MISTRAL

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather forecast",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer", "minimum": 1, "maximum": 14},
                    "units": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "limit": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "set_alarm",
            "parameters": {
                "type": "object",
                "properties": {"time": {"type": "string"}, "enabled": {"type": "boolean"}},
                "required": ["time", "enabled"],
            },
        },
    },
    {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}},
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                "required": ["a", "b"],
            },
        },
    },
]

PARIS = ("get_weather", {"city": "Paris"})
PARIS_3 = ("get_weather", {"city": "Paris", "days": 3})
NOW = ("now", {})

CASES = [
    # --- well formed, each family ---
    (
        "hermes_ok",
        H,
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        ["valid"],
        [PARIS],
    ),
    ("llama_ok", L, '{"name": "get_weather", "parameters": {"city": "Paris"}}', ["valid"], [PARIS]),
    (
        "llama_python_tag",
        L,
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>',
        ["valid"],
        [PARIS],
    ),
    ("mistral_ok", M, '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]', ["valid"], [PARIS]),
    ("mistral_v11", M, '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', ["valid"], [PARIS]),
    (
        "hermes_two",
        H,
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n<tool_call>{"name": "now", "arguments": {}}</tool_call>',
        ["valid", "valid"],
        [PARIS, NOW],
    ),
    (
        "llama_semicolon",
        L,
        '{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "now", "parameters": {}}',
        ["valid", "valid"],
        [PARIS, NOW],
    ),
    (
        "llama_newlines",
        L,
        '{"name": "get_weather", "parameters": {"city": "Paris"}}\n{"name": "now", "parameters": {}}',
        ["valid", "valid"],
        [PARIS, NOW],
    ),
    (
        "mistral_two",
        M,
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "now", "arguments": {}}]',
        ["valid", "valid"],
        [PARIS, NOW],
    ),
    ("no_arguments_key", H, '<tool_call>{"name": "now"}</tool_call>', ["valid"], [NOW]),
    # --- markdown fences ---
    (
        "hermes_fence",
        H,
        '<tool_call>\n```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\n</tool_call>',
        ["repaired"],
        [PARIS],
    ),
    ("llama_fence", L, '```json\n{"name": "get_weather", "parameters": {"city": "Paris"}}\n```', ["valid"], [PARIS]),
    ("llama_fence_plain", L, '```\n{"name": "now", "parameters": {}}\n```', ["valid"], [NOW]),
    (
        "mistral_fence",
        M,
        '[TOOL_CALLS]```json\n[{"name": "get_weather", "arguments": {"city": "Paris"}}]\n```',
        ["repaired"],
        [PARIS],
    ),
    # --- trailing commas ---
    (
        "hermes_trailing_comma",
        H,
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris",}}</tool_call>',
        ["repaired"],
        [PARIS],
    ),
    (
        "llama_trailing_comma",
        L,
        '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3,},}',
        ["repaired"],
        [PARIS_3],
    ),
    (
        "mistral_trailing_comma",
        M,
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}},]',
        ["repaired"],
        [PARIS],
    ),
    # --- single quotes ---
    (
        "hermes_single_quotes",
        H,
        "<tool_call>{'name': 'get_weather', 'arguments': {'city': 'Paris'}}</tool_call>",
        ["repaired"],
        [PARIS],
    ),
    (
        "llama_single_quotes",
        L,
        "{'name': 'get_weather', 'parameters': {'city': 'Paris', 'days': 3}}",
        ["repaired"],
        [PARIS_3],
    ),
    ("mistral_single_quotes", M, "[TOOL_CALLS][{'name': 'now', 'arguments': {}}]", ["repaired"], [NOW]),
    (
        "single_quotes_apostrophe",
        H,
        "<tool_call>{'name': 'search', 'arguments': {'query': \"it's raining\"}}</tool_call>",
        ["repaired"],
        [("search", {"query": "it's raining"})],
    ),
    # --- unquoted keys ---
    (
        "hermes_unquoted_keys",
        H,
        '<tool_call>{name: "get_weather", arguments: {city: "Paris"}}</tool_call>',
        ["repaired"],
        [PARIS],
    ),
    (
        "llama_unquoted_keys",
        L,
        '{"name": "get_weather", "parameters": {city: "Paris", days: 3}}',
        ["repaired"],
        [PARIS_3],
    ),
    (
        "mistral_unquoted_keys",
        M,
        '[TOOL_CALLS][{name: "get_weather", arguments: {city: "Paris"}}]',
        ["repaired"],
        [PARIS],
    ),
    # --- truncated JSON ---
    (
        "hermes_truncated_close",
        H,
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"',
        ["repaired"],
        [PARIS],
    ),
    (
        "hermes_truncated_string",
        H,
        '<tool_call>{"name": "search", "arguments": {"query": "best pizza',
        ["repaired"],
        [("search", {"query": "best pizza"})],
    ),
    (
        "llama_truncated",
        L,
        '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3',
        ["repaired"],
        [PARIS_3],
    ),
    (
        "mistral_truncated",
        M,
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}',
        ["repaired"],
        [PARIS],
    ),
    (
        "truncated_before_required",
        H,
        '<tool_call>{"name": "set_alarm", "arguments": {"time": "07:00", "ena',
        ["failed"],
        [],
    ),
    ("truncated_in_name", H, '<tool_call>{"name": "get_wea', ["failed"], []),
    # --- prose around JSON ---
    (
        "hermes_prose",
        H,
        'Let me look that up.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        ["valid"],
        [PARIS],
    ),
    (
        "llama_prose",
        L,
        'Sure! Here is the call:\n{"name": "get_weather", "parameters": {"city": "Paris"}}\nHope this helps.',
        ["valid"],
        [PARIS],
    ),
    (
        "llama_prose_fence",
        L,
        'I will call the tool.\n```json\n{"name": "now", "parameters": {}}\n```',
        ["valid"],
        [NOW],
    ),
    (
        "hermes_bare_json_leak",
        H,
        'Calling now: {"name": "get_weather", "arguments": {"city": "Paris"}}',
        ["valid"],
        [PARIS],
    ),
    ("mistral_prose_before", M, 'Checking.[TOOL_CALLS][{"name": "now", "arguments": {}}]', ["valid"], [NOW]),
    ("prose_json_not_a_call", H, 'The record is {"name": "Ada", "born": 1815}.', [], []),
    ("plain_text", L, "The weather in Paris is sunny.", [], []),
    # --- duplicates ---
    (
        "hermes_duplicate",
        H,
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
        ["valid"],
        [PARIS],
    ),
    (
        "llama_duplicate_key_order",
        L,
        '{"name": "get_weather", "parameters": {"city": "Paris", "days": 3}}; {"name": "get_weather", "parameters": {"days": 3, "city": "Paris"}}',
        ["valid"],
        [PARIS_3],
    ),
    (
        "mistral_duplicate",
        M,
        '[TOOL_CALLS][{"name": "now", "arguments": {}}, {"name": "now", "arguments": {}}, {"name": "now", "arguments": {}}]',
        ["valid"],
        [NOW],
    ),
    (
        "same_tool_different_args",
        H,
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>',
        ["valid", "valid"],
        [PARIS, ("get_weather", {"city": "Rome"})],
    ),
    # --- wrong types (coerced) ---
    (
        "string_integer",
        H,
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "days": "3"}}</tool_call>',
        ["repaired"],
        [PARIS_3],
    ),
    (
        "string_boolean",
        L,
        '{"name": "set_alarm", "parameters": {"time": "07:00", "enabled": "true"}}',
        ["repaired"],
        [("set_alarm", {"time": "07:00", "enabled": True})],
    ),
    (
        "string_number",
        M,
        '[TOOL_CALLS][{"name": "add", "arguments": {"a": "1.5", "b": "2"}}]',
        ["repaired"],
        [("add", {"a": 1.5, "b": 2})],
    ),
    (
        "float_integer",
        H,
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "days": 3.0}}</tool_call>',
        ["valid"],
        [PARIS_3],
    ),
    (
        "single_to_array",
        H,
        '<tool_call>{"name": "search", "arguments": {"query": "pizza", "tags": "food"}}</tool_call>',
        ["repaired"],
        [("search", {"query": "pizza", "tags": ["food"]})],
    ),
    (
        "array_as_string",
        L,
        '{"name": "search", "parameters": {"query": "pizza", "tags": "[\\"a\\", \\"b\\"]"}}',
        ["repaired"],
        [("search", {"query": "pizza", "tags": ["a", "b"]})],
    ),
    (
        "number_to_string",
        H,
        '<tool_call>{"name": "search", "arguments": {"query": 42}}</tool_call>',
        ["repaired"],
        [("search", {"query": "42"})],
    ),
    (
        "arguments_double_encoded",
        H,
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}</tool_call>',
        ["repaired"],
        [PARIS],
    ),
    (
        "enum_case",
        H,
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "units": "Celsius"}}</tool_call>',
        ["repaired"],
        [("get_weather", {"city": "Paris", "units": "celsius"})],
    ),
    (
        "extra_property_dropped",
        M,
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "country": "FR"}}]',
        ["repaired"],
        [PARIS],
    ),
    (
        "wrong_type_uncoercible",
        H,
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "days": "three"}}</tool_call>',
        ["failed"],
        [],
    ),
    ("out_of_range", L, '{"name": "get_weather", "parameters": {"city": "Paris", "days": 40}}', ["failed"], []),
    (
        "bad_enum",
        M,
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "units": "kelvin"}}]',
        ["failed"],
        [],
    ),
    (
        "arguments_not_object",
        H,
        '<tool_call>{"name": "get_weather", "arguments": ["Paris"]}</tool_call>',
        ["failed"],
        [],
    ),
    # --- missing required fields ---
    ("missing_required", H, '<tool_call>{"name": "get_weather", "arguments": {"days": 3}}</tool_call>', ["failed"], []),
    ("missing_required_llama", L, '{"name": "set_alarm", "parameters": {"time": "07:00"}}', ["failed"], []),
    ("missing_required_mistral", M, '[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}]', ["failed"], []),
    ("missing_name", H, '<tool_call>{"arguments": {"city": "Paris"}}</tool_call>', ["failed"], []),
    # --- unknown tools ---
    (
        "unknown_tool_hermes",
        H,
        '<tool_call>{"name": "get_stock", "arguments": {"ticker": "X"}}</tool_call>',
        ["failed"],
        [],
    ),
    ("unknown_tool_llama", L, '{"name": "send_email", "parameters": {"to": "a@b.c"}}', ["failed"], []),
    (
        "unknown_tool_mistral",
        M,
        '[TOOL_CALLS][{"name": "now", "arguments": {}}, {"name": "launch", "arguments": {}}]',
        ["valid", "failed"],
        [NOW],
    ),
    (
        "namespaced_name",
        H,
        '<tool_call>{"name": "functions.get_weather", "arguments": {"city": "Paris"}}</tool_call>',
        ["repaired"],
        [PARIS],
    ),
    ("name_case", L, '{"name": "Get_Weather", "parameters": {"city": "Paris"}}', ["repaired"], [PARIS]),
    # --- shapes from other families / APIs ---
    (
        "openai_shape",
        H,
        '<tool_call>{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}</tool_call>',
        ["valid"],
        [PARIS],
    ),
    ("llama_model_uses_hermes", L, '<tool_call>{"name": "now", "arguments": {}}</tool_call>', ["valid"], [NOW]),
    ("qwen_uses_mistral", H, '[TOOL_CALLS][{"name": "now", "arguments": {}}]', ["valid"], [NOW]),
    ("not_json_at_all", H, "<tool_call>call get_weather for Paris</tool_call>", ["failed"], []),
    (
        "hermes_unclosed_then_next",
        H,
        '<tool_call>{"name": "now", "arguments": {}}\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
        ["valid", "valid"],
        [NOW, PARIS],
    ),
]
