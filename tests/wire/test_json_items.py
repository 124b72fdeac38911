"""loads_by_items: what json.loads gives or refuses, a big body's top-level arrays read one item per scanner call,
on parse_json_off_loop's worker thread (json.loads held the GIL, and so the event loop, for the whole body)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from velollm.wire import json_body, json_items
from velollm.wire.json_items import loads_by_items

SAME = [
    '{"model": "m", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": null}]}',
    '{"a":[1,2.5e3,-0,true,false,null,"x",[],{}],"b":{"c":[1]},"d":[]}',  # compact separators
    ' \n{ "a" : [ 1 ,\t2 , [3, 4] ] , "a" : [5] , "e": "\\ud83d\\ude00 \\u00e9 \\ud800" }\r\n',  # duplicate key
    json.dumps({"messages": [{"role": "user", "content": "x" * 40}] * 50, "tools": [], "n": 1}, indent=2),
    '{"a": [NaN, Infinity, 1e400], "b": []}',  # json.loads reads these; check_json refuses them after
    '[1, 2, 3]', '"text"', '{}', '{"a": []}',
]
REFUSED = ['{"a": [1, 2,]}', '{"a": [1, 2', '{"a": [1, ', '{"a": [1 2]}', '{"a" [1]}', '{a: 1}', '{"a": 1,}',
           '{"a": [1]} x', '{"a": [1], ', '{"a": [1]}}', '', '{"a": [01]}', '{"a": [1, ]}']


@pytest.mark.parametrize("text", SAME)
def test_the_values_json_loads_gives(text):
    assert repr(loads_by_items(text)) == repr(json.loads(text))  # repr: NaN equals itself there
    assert repr(loads_by_items(text.encode())) == repr(json.loads(text.encode()))
    assert repr(loads_by_items(text.encode("utf-16"))) == repr(json.loads(text.encode("utf-16")))


@pytest.mark.parametrize("text", REFUSED)
def test_what_json_loads_refuses_is_a_value_error(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        loads_by_items(text)


def test_a_big_body_is_read_item_by_item_on_a_worker_thread(monkeypatch):
    """Between two scanner calls the interpreter may switch to the event loop's thread: one call per message."""
    calls, threads = [], set()
    decoder = json.JSONDecoder()
    scan = decoder.scan_once

    def counted(text, pos):
        calls.append(pos)
        threads.add(threading.current_thread())
        return scan(text, pos)

    decoder.scan_once = counted
    monkeypatch.setattr(json_items, "_DECODER", decoder)
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 100} for _ in range(12_000)]}
    data = json.dumps(body).encode()
    assert len(data) >= json_body.OFF_LOOP_BYTES
    assert asyncio.run(json_body.parse_json_off_loop(data)) == body
    assert len(calls) >= 12_000 and threading.main_thread() not in threads
