"""ReasoningParser: the interface every reasoning family implements (split thinking from the answer)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of model output, split: the thinking and the answer (content)."""

    reasoning: str = ""
    content: str = ""

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content)

    def __add__(self, other: ReasoningDelta) -> ReasoningDelta:
        return ReasoningDelta(self.reasoning + other.reasoning, self.content + other.content)


class ReasoningStream(ABC):
    """Splits one answer as it streams: `feed` each text delta, then `finish` once.

    Text that may be the start of a marker is held back until it is known; concatenating every
    returned delta gives the same split as `ReasoningParser.split` on the whole text.
    """

    @abstractmethod
    def feed(self, text: str) -> ReasoningDelta:
        """The split of what can be said so far about `text` (appended to what came before)."""

    @abstractmethod
    def finish(self) -> ReasoningDelta:
        """What was held back, at the end of the answer."""

    @property
    @abstractmethod
    def in_reasoning(self) -> bool:
        """True while the model is (still) thinking: tokens now are reasoning tokens."""


class ReasoningParser(ABC):
    """One family's reasoning format (think tags, gpt-oss channels, ...). Stateless: one per model."""

    #: the text that opens the thinking, and the one that closes it (a constrained answer follows it)
    start_marker: str
    end_marker: str

    @abstractmethod
    def stream(self, in_reasoning: bool = False) -> ReasoningStream:
        """A splitter for one answer; `in_reasoning`: the prompt already opened the thinking
        (DeepSeek-R1 templates end the prompt with `<think>`)."""

    def prompt_opens_reasoning(self, prompt_tail: str) -> bool:
        """True when the rendered prompt (its last characters suffice) already opened the thinking."""
        return False

    def split(self, text: str, in_reasoning: bool = False) -> ReasoningDelta:
        """The whole answer, split."""
        stream = self.stream(in_reasoning)
        return stream.feed(text) + stream.finish()
