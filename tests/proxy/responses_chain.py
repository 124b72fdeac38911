"""A Responses conversation continued through a front (a proxy or a router) for the tests of responses stored
upstream: two more turns, one answered whole and one streamed, and the chain they form checked."""

from __future__ import annotations

from typing import Any

MESSAGE_ROLES = ["user", "assistant", "user", "assistant", "user"]  # a third turn's input items, its own included


def continue_twice(front: Any, first: Any, model: str = "demo") -> tuple[Any, Any]:
    """The second (whole) and third (streamed) responses continuing `first` through the openai client `front`."""
    second = front.responses.create(model=model, input="again", previous_response_id=first.id, max_output_tokens=4)
    events = list(front.responses.create(model=model, input="more", previous_response_id=second.id,
                                         max_output_tokens=4, stream=True))
    third = events[-1].response
    assert (second.previous_response_id, third.previous_response_id) == (first.id, second.id)
    return second, third


def message_roles(items: list[Any]) -> list[str]:
    return [i.role for i in items if i.type == "message"]
