"""ToolSession: everything one chat request with tools needs, behind one object.

The API builds one per request (after validating the body) and asks it for the prompt, the
grammar constraint, the parser of the answer (whole or streamed), and the retry messages when a
call could not be repaired.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from velollm.errors import InvalidRequest
from velollm.sampling_params import StructuredOutput
from velollm.tools.tool_grammar import calls_or_answer, named_tool, tool_call_constraint
from velollm.tools.tool_parsers import ToolFamily, detect_family
from velollm.tools.tool_prompt import render_with_tools
from velollm.tools.tool_repair import RepairConfig, RepairResult, ToolRepairer
from velollm.tools.tool_schema import template_tools, tool_specs
from velollm.tools.tool_stream import StreamingToolParser

if TYPE_CHECKING:
    from velollm.engine.text.tokenizer import Tokenizer


@dataclass(frozen=True)
class ToolCallConfig:
    retries: int = 2  # --tool-retries: new generations with a corrective message after a failed call
    dedupe: bool = True
    coerce: bool = True
    constrain_auto: bool = True  # tool_choice="auto": constrain from the tool-call marker on
    max_parallel_calls: int = 4  # calls of a forced ("required") answer, so that it ends in time

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be non-negative, got {self.retries}")
        if self.max_parallel_calls < 1:
            raise ValueError(f"max_parallel_calls must be at least 1, got {self.max_parallel_calls}")


class ToolSession:
    """Tool calling for one request: prompt, constraint, parsing, retries."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        tools: Sequence[Mapping[str, Any]] | None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = True,
        *,
        model_type: str | None = None,
        config: ToolCallConfig | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.config = config or ToolCallConfig()
        self.specs = tool_specs(tools)  # validated and normalized: for the grammar and the repairs
        self.template_tools = template_tools(tools) if self.specs else None  # for the prompt: as sent
        self.tool_choice = "auto" if tool_choice is None else tool_choice
        if self.tool_choice not in ("auto", "none", "required"):
            named_tool(self.tool_choice)  # raises InvalidRequest on a malformed choice
        if not self.specs and self.tool_choice not in ("auto", "none"):
            raise InvalidRequest("tool_choice requires tools, but none were given", param="tool_choice")
        self.parallel_tool_calls = parallel_tool_calls
        from velollm.engine.text.template_layer import go_layer  # not at import: --proxy-only loads no engine

        # The template that renders the chat names the call format: a store model's Go TEMPLATE layer when it has
        # no jinja template (Ollama reads the calls' format off that template too).
        self.family: ToolFamily = detect_family(go_layer(tokenizer) or tokenizer.chat_template, model_type)
        max_calls = None if parallel_tool_calls else 1
        repair = RepairConfig(dedupe=self.config.dedupe, coerce=self.config.coerce, max_calls=max_calls)
        self.repairer = ToolRepairer(self.specs, self.family, repair)

    @property
    def active(self) -> bool:
        """Whether answers are parsed for calls (tools given and tool_choice is not "none")."""
        return bool(self.specs) and self.tool_choice != "none"

    @cached_property
    def structured_output(self) -> StructuredOutput | None:
        """The grammar constraint for SamplingParams.structured_output (None: free generation);
        built once per session, as it serializes every tool's schema."""
        if not self.active or (self.tool_choice == "auto" and not self.config.constrain_auto):
            return None
        return tool_call_constraint(
            self.specs,
            self.tool_choice,
            self.family,
            self.parallel_tool_calls,
            max_calls=self.config.max_parallel_calls,
        )

    def constraint_beside(self, answer: StructuredOutput | None) -> StructuredOutput | None:
        """The constraint when the request also constrains its answer (response_format, `format`): the tool
        grammar where the choice forces calls, calls or that answer for "auto", else the answer's own."""
        if answer is None or not self.active or self.tool_choice != "auto":
            return self.structured_output or answer
        return calls_or_answer(self.specs, self.family, self.parallel_tool_calls, answer,
                               max_calls=self.config.max_parallel_calls if self.parallel_tool_calls else 1)

    @property
    def skip_special_tokens(self) -> bool:
        """Tool markers are special tokens in some vocabularies ([TOOL_CALLS], <|python_tag|>):
        the answer must be detokenized with them."""
        return not self.active

    def render_prompt(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> str:
        return render_with_tools(self.tokenizer, messages, self.template_tools, self.family, **kwargs)

    def prompt_token_ids(self, messages: Sequence[Mapping[str, Any]], **kwargs: Any) -> list[int]:
        return self.tokenizer.encode(self.render_prompt(messages, **kwargs), add_special_tokens=False)

    def parse(self, text: str) -> RepairResult:
        """The answer's content and validated calls (content only when tool_choice is "none")."""
        if not self.active:
            return RepairResult(content=text, calls=())
        return self.repairer.repair_text(text)

    def stream_parser(self) -> StreamingToolParser:
        """A parser for the streamed answer: arguments stream as they come when a grammar
        guarantees them, else each call is repaired and sent whole."""
        return StreamingToolParser(self.family, self.repairer, incremental=self.structured_output is not None)

    def should_retry(self, result: RepairResult, attempt: int) -> bool:
        """Retry when a call failed and retries remain (attempt counts from 0)."""
        return self.active and not result.ok and attempt < self.config.retries

    def retry_messages(
        self, messages: Sequence[Mapping[str, Any]], text: str, result: RepairResult
    ) -> list[dict[str, Any]]:
        """`messages` plus the failed answer and a user message saying what to fix."""
        return [
            *(dict(m) for m in messages),
            {"role": "assistant", "content": text},
            {"role": "user", "content": result.corrective_message()},
        ]

    @staticmethod
    def finish_reason(result: RepairResult, engine_reason: str | None) -> str | None:
        """ "tool_calls" whenever the answer carries calls (forced or not), else the engine's."""
        return "tool_calls" if result.calls else engine_reason
