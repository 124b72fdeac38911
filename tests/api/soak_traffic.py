"""Mixed client traffic for the soak test: every action a real client does against `velollm serve demo`,
through the official clients where there is one, and the ways clients go wrong (unknown model names,
malformed bodies, leaving mid-stream). Each action returns the HTTP status the server gave."""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import ollama
import openai

MAX = 6  # output tokens: enough for a stream of a few chunks, small enough for many requests on CPU
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
    "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}
MALFORMED: list[tuple[str, bytes]] = [
    ("/v1/chat/completions", b"{not json"),
    ("/v1/chat/completions", json.dumps({"model": "demo", "messages": "nope"}).encode()),
    ("/v1/chat/completions", json.dumps({"model": "demo", "messages": [{"role": 5}]}).encode()),
    ("/v1/completions", json.dumps({"model": "demo", "prompt": "x", "max_tokens": -3}).encode()),
    ("/v1/responses", json.dumps({"model": "demo", "input": [{"role": [], "content": ""}]}).encode()),
    ("/api/generate", json.dumps({"model": "demo", "prompt": 123}).encode()),
    ("/api/chat", b"[1, 2, 3]"),
    ("/v1/embeddings", json.dumps({"model": "demo", "input": {"a": 1}}).encode()),
]


def random_name(rng: random.Random) -> str:
    return "nope-" + "".join(rng.choices(string.ascii_lowercase + string.digits, k=rng.randint(4, 24)))


@dataclass
class Clients:
    url: str
    rng: random.Random
    oai: openai.AsyncOpenAI = field(init=False)
    oll: ollama.AsyncClient = field(init=False)
    http: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.oai = openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="x", max_retries=0, timeout=60)
        self.oll = ollama.AsyncClient(host=self.url, timeout=60)
        self.http = httpx.AsyncClient(base_url=self.url, timeout=60)

    async def aclose(self) -> None:
        await self.oai.close()
        await self.http.aclose()
        await self.oll._client.aclose()

    def words(self) -> str:
        return " ".join(self.rng.choices(["tell", "me", "about", "the", "sea", "cats", "42", "why", "é", "日本"],
                                         k=self.rng.randint(3, 30)))

    # --- OpenAI ---------------------------------------------------------------------------------------

    async def chat(self) -> int:
        kw = {"stream": True, "stream_options": {"include_usage": True}} if self.rng.random() < 0.5 else {}
        r = await self.oai.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": self.words()}], max_tokens=MAX, **kw)
        if kw:
            assert [c async for c in r]
        return 200

    async def chat_tools(self) -> int:
        await self.oai.chat.completions.create(model="demo", messages=[{"role": "user", "content": "weather?"}],
                                               tools=TOOLS, max_tokens=MAX)
        return 200

    async def chat_schema(self) -> int:
        await self.oai.chat.completions.create(model="demo", messages=[{"role": "user", "content": self.words()}],
                                               response_format=SCHEMA, max_tokens=MAX)  # type: ignore[arg-type]
        return 200

    async def chat_n2(self) -> int:
        r = await self.oai.chat.completions.create(model="demo", messages=[{"role": "user", "content": "two"}],
                                                   n=2, max_tokens=MAX)
        assert len(r.choices) == 2
        return 200

    async def responses_chain(self) -> int:
        r = await self.oai.responses.create(model="demo", input=self.words(), max_output_tokens=MAX, store=True)
        for _ in range(self.rng.randint(1, 3)):
            r = await self.oai.responses.create(model="demo", input=self.words(), max_output_tokens=MAX,
                                                previous_response_id=r.id, store=True)
        assert (await self.oai.responses.retrieve(r.id)).id == r.id
        return 200

    async def long_history(self) -> int:
        """A conversation longer than the 512-token context, fitted by truncation or compression (summary):
        the context layer's caches (TurnCache, fit plans, summaries) see a new conversation each time."""
        topic = self.words()
        history = []
        for turn in range(self.rng.randint(8, 16)):
            history += [{"role": "user", "content": f"{topic} turn {turn}: " + self.words() * 3},
                        {"role": "assistant", "content": self.words() * 2}]
        history.append({"role": "user", "content": "and now?"})
        mode = self.rng.choice(["truncate", "compress"])
        if self.rng.random() < 0.5:
            await self.oai.chat.completions.create(model="demo", messages=history, max_tokens=MAX,  # type: ignore[arg-type]
                                                   extra_body={"context_overflow": mode})
        else:
            await self.oll.chat(model="demo", messages=history, options={"num_predict": MAX, "context_overflow": mode})
        return 200

    async def embeddings(self) -> int:
        r = await self.http.post("/v1/embeddings", json={"model": "demo", "input": [self.words(), "b"]})
        return r.status_code

    # --- Ollama ---------------------------------------------------------------------------------------

    async def ollama_chat(self) -> int:
        stream = self.rng.random() < 0.5
        r = await self.oll.chat(model="demo", messages=[{"role": "user", "content": self.words()}],
                                stream=stream, options={"num_predict": MAX})
        if stream:
            assert [part async for part in r]  # type: ignore[union-attr]
        return 200

    async def ollama_generate(self) -> int:
        stream = self.rng.random() < 0.5
        r = await self.oll.generate(model="demo", prompt=self.words(), stream=stream, options={"num_predict": MAX})
        if stream:
            assert [part async for part in r]  # type: ignore[union-attr]
        return 200

    # --- clients that go wrong ------------------------------------------------------------------------

    async def unknown_model(self) -> int:
        name = random_name(self.rng)
        kind = self.rng.randrange(4)
        try:
            if kind == 0:
                await self.oai.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
            elif kind == 1:
                await self.oai.responses.create(model=name, input="hi")
            elif kind == 2:
                await self.oll.chat(model=name, messages=[{"role": "user", "content": "hi"}])
            else:
                await self.oll.generate(model=name, prompt="hi")
        except openai.APIStatusError as e:
            return e.status_code
        except ollama.ResponseError as e:
            return e.status_code
        return 200

    async def malformed(self) -> int:
        if self.rng.random() < 0.2:  # a path nobody serves: no state (metric label, table row) per path
            return (await self.http.post(f"/v1/{random_name(self.rng)}", json={"model": "demo"})).status_code
        path, body = self.rng.choice(MALFORMED)
        r = await self.http.post(path, content=body, headers={"content-type": "application/json"})
        return r.status_code

    async def leave_mid_stream(self) -> int:
        if self.rng.random() < 0.5:
            path, body = "/v1/chat/completions", {"model": "demo", "stream": True, "max_tokens": 200,
                                                  "ignore_eos": True, "messages": [{"role": "user", "content": "go"}]}
        else:
            path, body = "/api/generate", {"model": "demo", "prompt": "go on", "options": {"num_predict": 200}}
        async with self.http.stream("POST", path, json=body) as r:
            status = r.status_code
            async for _ in r.aiter_bytes():
                break  # closing the response here drops the connection mid-stream
        return status


ACTIONS: dict[str, tuple[int, Callable[[Clients], Awaitable[int]]]] = {  # name -> (weight, action)
    "chat": (4, Clients.chat), "chat_tools": (1, Clients.chat_tools), "chat_schema": (1, Clients.chat_schema),
    "chat_n2": (1, Clients.chat_n2), "responses_chain": (1, Clients.responses_chain),
    "long_history": (1, Clients.long_history), "embeddings": (1, Clients.embeddings), "ollama_chat": (2, Clients.ollama_chat),
    "ollama_generate": (2, Clients.ollama_generate), "unknown_model": (3, Clients.unknown_model),
    "malformed": (2, Clients.malformed), "leave_mid_stream": (2, Clients.leave_mid_stream),
}


async def client_loop(url: str, seed: int, seconds: float, statuses: Counter[tuple[str, int]]) -> None:
    """One client: random actions until `seconds` have passed; each (action, status) counted."""
    clients = Clients(url, random.Random(seed))
    names = list(ACTIONS)
    weights = [ACTIONS[n][0] for n in names]
    deadline = asyncio.get_running_loop().time() + seconds
    try:
        while asyncio.get_running_loop().time() < deadline:
            name = clients.rng.choices(names, weights)[0]
            statuses[(name, await ACTIONS[name][1](clients))] += 1
    finally:
        await clients.aclose()


async def traffic(url: str, num_clients: int, seconds: float, seed: int) -> Counter[tuple[str, int]]:
    statuses: Counter[tuple[str, int]] = Counter()
    await asyncio.gather(*(client_loop(url, seed * 100 + i, seconds, statuses) for i in range(num_clients)))
    return statuses
