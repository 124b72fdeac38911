"""ContextReport: what was done to a prompt to make it fit, for the x-velollm-context header and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

HEADER = "x-velollm-context"


@dataclass
class ContextReport:
    mode: str
    num_original_tokens: int  # the prompt as the client sent it
    num_prompt_tokens: int  # the prompt that ran
    dropped_messages: list[int] = field(default_factory=list)  # indices into the request's messages
    summarized_messages: list[int] = field(default_factory=list)  # replaced by a summary in the system prompt
    dropped_tokens: tuple[int, int] | None = None  # ids [start, end) of a token prompt (/api/generate context)
    # ids [start, end) of the prompt (after any turns were dropped) cut at the token level, as Ollama's runner
    # cuts a prompt that does not fit (velollm.context.token_cut): the first num_keep ids and the tail stay
    cut_tokens: tuple[int, int] | None = None
    saved_tokens: dict[str, int] = field(default_factory=dict)  # compression step -> tokens it saved
    step_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.dropped_messages or self.summarized_messages or self.dropped_tokens or self.cut_tokens) \
            or any(self.saved_tokens.values())

    def header(self) -> str:
        """`mode=truncate; tokens=9000->3900; dropped_messages=1-4,7` (and `saved=step:n,...` for compress,
        `cut_tokens=4-5104` for a prompt cut at the token level)."""
        parts = [f"mode={self.mode}", f"tokens={self.num_original_tokens}->{self.num_prompt_tokens}"]
        if self.dropped_messages:
            parts.append("dropped_messages=" + index_ranges(self.dropped_messages))
        if self.summarized_messages:
            parts.append("summarized_messages=" + index_ranges(self.summarized_messages))
        if self.dropped_tokens:
            parts.append("dropped_tokens={}-{}".format(*self.dropped_tokens))
        if self.cut_tokens:
            parts.append("cut_tokens={}-{}".format(*self.cut_tokens))
        saved = [f"{step}:{n}" for step, n in self.saved_tokens.items() if n]
        if saved:
            parts.append("saved=" + ",".join(saved))
        if self.step_seconds:
            parts.append("seconds=" + ",".join(f"{step}:{s:.4f}" for step, s in self.step_seconds.items()))
        return "; ".join(parts)


def index_ranges(indices: list[int]) -> str:
    """Sorted indices as runs: `1-4,7`. Listed one by one, a long agent session's thousands of dropped
    messages made a header of tens of kilobytes, past what HTTP stacks take (aiohttp, behind Open WebUI:
    8190 bytes a line; nginx's default proxy buffer: 4-8 KiB, a 502; Node: 16 KiB in all)."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
