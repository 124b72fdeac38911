"""Reasoning models: split the thinking from the answer, per model family.

Used by the native API and by the proxy alike (it imports nothing of either): `ThinkingTemplate`
says what a chat template does about thinking and turns a request's `ThinkSetting` into a
`ThinkPlan`; a `ReasoningParser` (families.py picks it) splits answers, whole or streamed.
"""

from velollm.reasoning.families import FAMILIES, THINK_TAGS, ReasoningFamily, family_for_name, family_for_template
from velollm.reasoning.parser import ReasoningDelta, ReasoningParser, ReasoningStream
from velollm.reasoning.think_plan import PlannedStream, ThinkPlan
from velollm.reasoning.think_setting import THINK_LEVELS, ThinkSetting
from velollm.reasoning.think_tags import ThinkTagParser
from velollm.reasoning.thinking_template import ThinkingTemplate

__all__ = ["FAMILIES", "THINK_LEVELS", "THINK_TAGS", "PlannedStream", "ReasoningDelta", "ReasoningFamily",
           "ReasoningParser", "ReasoningStream", "ThinkPlan", "ThinkSetting", "ThinkTagParser", "ThinkingTemplate",
           "family_for_name", "family_for_template"]
