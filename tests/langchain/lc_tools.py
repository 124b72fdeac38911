"""What the LangChain tests share: two tools, a structured-output model, clients on a server."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

PROMPT = "What is the weather in Paris?"
PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                                     "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()


def get_weather(city: str, unit: str = "c") -> str:
    """The weather in a city, in degrees c or f."""
    return f"sunny, 21 {unit}"


def get_time(zone: str) -> str:
    """The time in a time zone."""
    return "12:00"


TOOLS = [get_weather, get_time]
SCHEMAS = {f.__name__: convert_to_openai_tool(f)["function"]["parameters"] for f in TOOLS}


class Weather(BaseModel):
    """A weather report."""

    city: str = Field(max_length=16)
    degrees: int = Field(ge=-60, le=60)
    sky: str = Field(description="sunny, cloudy or rainy")


def check_calls(calls: list[dict[str, Any]], names: set[str] | None = None) -> None:
    """Each LangChain tool call names an offered tool and its args validate against that tool's schema."""
    assert calls
    for call in calls:
        assert call["name"] in (names or SCHEMAS)
        jsonschema.validate(call["args"], SCHEMAS[call["name"]])


def chat_openai(url: str, **kw: Any) -> ChatOpenAI:
    kw.setdefault("model", "demo")
    return ChatOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120, **kw)


def chat_ollama(url: str, **kw: Any) -> ChatOllama:
    kw.setdefault("model", "demo")
    return ChatOllama(base_url=url, client_kwargs={"timeout": 120}, **kw)


def join(chunks: Any) -> Any:
    """A stream's chunks added up, as LangChain users do."""
    out = None
    for chunk in chunks:
        out = chunk if out is None else out + chunk
    return out
