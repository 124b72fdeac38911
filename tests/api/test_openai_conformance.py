"""OpenAI API details found by driving `velollm serve demo` with the openai SDK as a user would
(each test names what was wrong before)."""

from __future__ import annotations

import openai
import pytest


def oai(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_developer_role_is_system_for_templates_without_it(live_server):
    """`developer` (what newer OpenAI clients send for instructions) was a 400 'chat template rejected
    the conversation: unsupported role: developer' on the demo model, whose template has no such role."""
    client = oai(live_server)
    kw = dict(model="demo", max_tokens=3, temperature=0, extra_body={"ignore_eos": True})
    dev = client.chat.completions.create(messages=[{"role": "developer", "content": "Be terse."},
                                                   {"role": "user", "content": "hi"}], **kw)
    sys = client.chat.completions.create(messages=[{"role": "system", "content": "Be terse."},
                                                   {"role": "user", "content": "hi"}], **kw)
    assert dev.usage.prompt_tokens == sys.usage.prompt_tokens
    assert dev.choices[0].message.content == sys.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(messages=[{"role": "bogus", "content": "x"}], **kw)
