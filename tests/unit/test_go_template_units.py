"""The Go template package's pieces beyond the goldens: Ollama's funcs and Vars, the chat entry's errors."""

from __future__ import annotations

import datetime

import pytest

from velollm.engine.text.go_template import GoTemplateError, execute, parse
from velollm.engine.text.go_template.builtins import NAMES
from velollm.engine.text.go_template.chat import checked_template, render_go_chat, think_values, uses_tools
from velollm.engine.text.go_template.ollama import Think, parse_template, render
from velollm.engine.text.go_template.values import go_float
from velollm.errors import InvalidRequest

USER = [{"role": "user", "content": "hi"}]


def test_parse_appends_response_unless_named():
    turns = [*USER, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "q"}]
    assert render(parse_template("<{{ .Prompt }}>"), turns) == "<hi>yo<q>"  # the appended .Response wrote "yo"
    assert parse_template("{{ range $.Messages }}{{ end }}").vars >= {"$", "messages"}
    assert "response" in parse_template("{{ .Response }}").vars


def test_date_funcs_take_and_ignore_a_format():
    today = datetime.date.today()
    out = render(parse_template('{{ currentDate }} {{ yesterdayDate "2006" }}{{ range .Messages }}{{ end }}'), USER)
    assert out == f"{today:%Y-%m-%d} {today - datetime.timedelta(days=1):%Y-%m-%d}"


def test_think_values_from_template_kwargs():
    assert think_values() == Think()
    assert think_values(enable_thinking=False) == Think(False, "", True)
    assert think_values(reasoning_effort="high") == Think(True, "high", True)
    t = "{{ if .IsThinkSet }}{{ .Think }}/{{ .ThinkLevel }}{{ end }}{{ range .Messages }}{{ end }}"
    assert render_go_chat(t, USER, think=Think(True, "low", True)) == "true/low"


def test_tools_named_by_the_template():
    assert uses_tools("{{ if .Tools }}{{ json .Tools }}{{ end }}{{ .Prompt }}")
    assert not uses_tools("{{ .Prompt }}") and not uses_tools("{{ broken")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    out = render_go_chat("{{ json .Tools }}{{ range .Messages }}{{ end }}", USER, tools=tools)
    assert out == '[{"type":"function","function":{"name":"f","description":"","parameters":{"type":"object","properties":{}}}}]'


def test_errors_are_400s_naming_the_field():
    with pytest.raises(InvalidRequest, match="unexpected EOF") as e:
        checked_template("{{ if .System }}")
    assert e.value.param == "template"
    with pytest.raises(InvalidRequest, match="can't evaluate field Nope") as e:
        render_go_chat("{{ range .Messages }}{{ .Nope }}{{ end }}", USER)
    assert e.value.param == "messages"
    with pytest.raises(InvalidRequest, match="messages must not be empty"):
        render_go_chat("{{ .Prompt }}", [])


def test_exec_errors_name_the_place_in_bytes_as_go_does():
    """Go's exec errors start `template: :LINE:COL: executing "NAME" at <NODE>:`, the column a byte offset in its
    line: text before the node in other scripts moves it by its UTF-8 length, not its characters. The message
    was Go's without that prefix; the chat's 400 carries it whole."""
    data = {"L": [1]}
    parse_error = "template: :1:5: executing \"\" at <index .L 5>: error calling index: index out of range: 5"
    for source, where in (("é{{ index .L 5 }}", ":1:5:"), ("ü\n😀 {{ index .L 5 }}", ":2:8:"),
                          ("{{ index .L 5 }}", ":1:3:")):
        with pytest.raises(GoTemplateError) as e:
            execute(parse(source, NAMES).root, data, {}, source=source)
        assert str(e.value) == parse_error.replace(":1:5:", where)
    called = '{{ define "t" }}日本{{ .X.Y }}{{ end }}{{ template "t" . }}'
    with pytest.raises(GoTemplateError) as e:
        parsed = parse(called, NAMES)
        execute(parsed.root, {"X": None}, {}, parsed.trees, called)
    assert str(e.value) == 'template: :1:27: executing "t" at <.X.Y>: nil pointer evaluating interface {}.Y'
    with pytest.raises(InvalidRequest) as e:
        render_go_chat("{{ range .Messages }}\n  → {{ .Nope }}{{ end }}", USER)
    assert str(e.value).endswith("template: :2:9: executing \"\" at <.Nope>: can't evaluate field Nope in type "
                                 "*template.templateMessage")


def test_legacy_cut_inside_if_else_is_refused_like_ollama_panics():
    with pytest.raises(GoTemplateError):
        render(parse_template("{{ if .Prompt }}{{ .Response }}{{ else }}x{{ end }}"), USER)


def test_runaway_templates_stop(monkeypatch):
    from velollm.engine.text.go_template import executor

    monkeypatch.setattr(executor, "MAX_STEPS", 50)
    with pytest.raises(GoTemplateError, match="step limit"):
        render(parse_template("{{ range .Messages }}{{ range $.Messages }}x{{ end }}{{ end }}"),
               [{"role": r, "content": "c"} for r in ("user", "assistant") * 10])


@pytest.mark.parametrize("template", ["{{ range 3000000 }}{{ end }}", "{{ range 1000000000000 }}x{{ end }}"])
def test_a_range_over_a_huge_integer_stops_at_the_step_limit_without_building_it(template, monkeypatch):
    """Go 1.22's range over an integer: each iteration counts as a step, an empty body too (else a loop of
    10^12 empty iterations would hold the render thread for hours), and the numbers are not built first. The
    empty body's case fails in seconds (no error) where an empty iteration is not counted, where 10^12 would hang;
    the numbers built first would be a MemoryError on 10^12."""
    from velollm.engine.text.go_template import executor

    monkeypatch.setattr(executor, "MAX_STEPS", 1000)
    with pytest.raises(GoTemplateError, match="step limit"):
        execute(parse(template, NAMES).root, {}, {})


@pytest.mark.parametrize("value, text", [(1e6, "1e+06"), (123456.0, "123456"), (0.0001, "0.0001"),
                                         (1e-05, "1e-05"), (2.5, "2.5"), (-3.0, "-3")])
def test_go_float(value, text):
    assert go_float(value) == text


def test_thinking_through_a_go_template_layer():
    """A Go layer that writes <think> and reads .Think: think=false reaches it as Ollama sets it."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from velollm.api.thinking import think_plan
    from velollm.reasoning import ThinkSetting

    fixtures = Path(__file__).parents[1] / "fixtures" / "go_template"
    case = {c["name"]: c for c in json.loads((fixtures / "cases.json").read_text())}["deepseek/thinking"]
    golden = {g["name"]: g for g in json.loads((fixtures / "goldens.json").read_text())}["deepseek/thinking"]
    tokenizer = SimpleNamespace(chat_template=None, go_template=case["template"])
    plan = think_plan(tokenizer, ThinkSetting(enabled=False), "m", strict=True)
    assert plan.template_kwargs == {"enable_thinking": False}
    out = render_go_chat(case["template"], case["messages"], think=think_values(**plan.template_kwargs))
    assert out == golden["output"] and out.rstrip().endswith("<think> </think>")
    chatml = SimpleNamespace(chat_template=None, go_template="{{ range .Messages }}{{ .Content }}{{ end }}")
    with pytest.raises(InvalidRequest, match="does not support thinking"):
        think_plan(chatml, ThinkSetting(enabled=True), "m", strict=True)


def test_typed_nils_act_as_empty():
    t = ('{{ range .Messages }}{{ len .ToolCalls }}{{ index .ToolCalls | len }}{{ slice .ToolCalls | len }}'
         '{{ .Images }}{{ end }}{{ len .Tools }}{{ if .Tools }}x{{ end }}{{ .Tools }}')
    assert render(parse_template(t), USER) == "000[]0null"


# --- a template from a request must not take the server down (Go has no bounds; VeloLLM's are these) ---------


def test_printf_width_past_go_parsenum_is_noverb_as_in_go():
    """Go 1.19 printed these (text/template, fmt): a width or precision whose digits overflow parsenum (a digit
    read past 1e6) ends the format with %!(NOVERB); widths up to 9,999,999 pad as asked."""
    run = lambda t: render(parse_template(t + "{{ range .Messages }}{{ end }}"), USER)
    assert run('{{ printf "a%99999999db" 1 }}') == "a%!(NOVERB)%!(EXTRA int=1)"
    assert run('{{ printf "a%9999999.99999999fb" 1.5 2 }}') == "a%!(NOVERB)%!(EXTRA float64=1.5, int=2)"
    assert run('{{ printf "%1000001d|" 1 | len }}') == "1000002"


def test_output_past_the_bound_is_an_error_not_a_gigabyte():
    doubling = '{{ $x := "ab" }}{{ range .Messages }}{{ $x = printf "%s%s" $x $x }}{{ end }}{{ len $x }}'
    many = [{"role": "user" if i % 2 == 0 else "assistant", "content": str(i)} for i in range(61)]
    with pytest.raises(InvalidRequest, match="exceeds 64 MiB"):
        render_go_chat(doubling, many)
    widths = "{{ range .Messages }}" + '{{ printf "%9999999d" 1 }}' * 8 + "{{ end }}"
    with pytest.raises(InvalidRequest, match="exceeds 64 MiB"):
        render_go_chat(widths, many)
    assert render_go_chat(doubling, many[:5]) == str(2 * 2 ** 5)  # five messages, five doublings: in bounds


@pytest.mark.parametrize("template", ["{{ if 1 }}" * 3000 + "{{ end }}" * 3000,
                                      "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
                                      "{{ if 0 }}" + "{{ else if 0 }}" * 3000 + "{{ end }}"])
def test_nesting_past_the_stack_is_a_400(template):
    with pytest.raises(InvalidRequest, match="nesting too deep"):
        render_go_chat(template, USER)


def _nested(n: int) -> dict[str, str]:
    return {"if": "{{ if 1 }}" * n + "{{ .Prompt }}" + "{{ end }}" * n,
            "paren": "{{ " + "(" * n + "1" + ")" * n + " }}{{ .Prompt }}",
            "else-if": "{{ if 0 }}" + "{{ else if 0 }}" * (n - 1) + "{{ end }}{{ .Prompt }}",
            "messages": "{{ range .Messages }}" + "{{ if 1 }}" * (n - 1) + "<think>{{ .Thinking }}</think>"
                        + "{{ end }}" * (n - 1) + "{{ end }}",
            "block": "{{ range .Messages }}" + "".join(f'{{{{ block "b{i}" . }}}}' for i in range(n - 1))
                     + "{{ .Content }}" + "{{ end }}" * n}


def test_nesting_is_bounded_where_every_walk_of_the_tree_fits_the_stack():
    """Nesting under the parser's stack could still pass a later walk's: Vars, the think tags and the legacy path's
    copy recurse several frames per level, so a template of some hundred levels was a RecursionError (a 500)
    there. Past MAX_NESTING the parse is a clear 400; at it, every walk runs, with a server thread's frames in use."""
    from velollm.engine.text.go_template.chat import template_vars, think_tags
    from velollm.engine.text.go_template.parser import MAX_NESTING

    def with_frames_in_use(k: int, f):
        return f() if k == 0 else with_frames_in_use(k - 1, f)

    for name, template in _nested(MAX_NESTING).items():
        with_frames_in_use(150, lambda t=template: (render_go_chat(t, USER), template_vars(t), think_tags(t)))
    assert "thinking" in template_vars(_nested(MAX_NESTING)["messages"])
    for n in (MAX_NESTING + 1, 300, 5000):
        for name, template in _nested(n).items():
            with pytest.raises(InvalidRequest, match=rf"nesting too deep \(over {MAX_NESTING} levels"):
                render_go_chat(template, USER)
            assert template_vars(template) == frozenset() and think_tags(template) == ("", ""), name


def test_go_layer_is_the_one_check_of_rendered_by_the_template_layer():
    from types import SimpleNamespace

    from velollm.api.ollama_models import capabilities
    from velollm.api.thinking import thinking_template
    from velollm.engine.text.template_layer import go_layer
    from velollm.tools.tool_prompt import _go_template_takes_tools

    # thinking as Ollama infers it: tags around .Thinking in a range over .Messages
    go = "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}{{ end }}{{ .Tools }}"
    layered = SimpleNamespace(chat_template=None, go_template=go)
    both = SimpleNamespace(chat_template="{{ messages }}", go_template=go)  # the jinja wins, as in the loader
    assert go_layer(layered) == go and go_layer(both) is None
    assert go_layer(SimpleNamespace(chat_template=None, go_template="")) is None
    assert go_layer(SimpleNamespace(chat_template=None)) is None  # a tokenizer without the attribute
    assert _go_template_takes_tools(layered) and not _go_template_takes_tools(both)
    assert thinking_template(layered).supports_thinking and not thinking_template(both).supports_thinking
    served = SimpleNamespace(engine=SimpleNamespace(tokenizer=layered))
    assert capabilities(served) == ["completion", "tools", "thinking"]
    served = SimpleNamespace(engine=SimpleNamespace(tokenizer=both))
    assert capabilities(served) == ["completion", "tools"]
    # an empty jinja template is a jinja template: the four agree that the layer does not render (capabilities
    # alone took the Go layer's tools and thinking, with `not chat_template`)
    empty = SimpleNamespace(chat_template="", go_template=go)
    assert go_layer(empty) is None and not _go_template_takes_tools(empty)
    assert not thinking_template(empty).supports_thinking
    assert capabilities(SimpleNamespace(engine=SimpleNamespace(tokenizer=empty))) == ["completion"]


def test_templates_calling_templates_stay_in_bounds():
    """define/template recursion ends at MAX_TEMPLATE_DEPTH in Go's words; deeper Python frames per level end as
    nesting too deep; a fan-out (2^40 calls) at the step limit; doubling output through templates at 64 MiB."""
    from velollm.engine.text.go_template.executor import MAX_TEMPLATE_DEPTH

    msgs = "{{ range .Messages }}{{ end }}"
    with pytest.raises(InvalidRequest, match=rf"exceeded maximum template depth \({MAX_TEMPLATE_DEPTH}\)"):
        render_go_chat('{{ define "r" }}{{ template "r" . }}{{ end }}{{ template "r" . }}' + msgs, USER)
    deep = '{{ define "r" }}' + "{{ if 1 }}" * 20 + '{{ template "r" . }}' + "{{ end }}" * 20 + "{{ end }}"
    with pytest.raises(InvalidRequest, match="nesting too deep"):
        render_go_chat(deep + '{{ template "r" . }}' + msgs, USER)
    fan = "".join(f'{{{{ define "t{i}" }}}}{{{{ template "t{i + 1}" }}}}{{{{ template "t{i + 1}" }}}}{{{{ end }}}}'
                  for i in range(40)) + '{{ define "t40" }}x{{ end }}'
    with pytest.raises(InvalidRequest, match="step limit"):
        render_go_chat(fan + '{{ template "t0" }}' + msgs, USER)
    doubling = "".join(f'{{{{ define "d{i}" }}}}{{{{ template "d{i + 1}" (printf "%s%s" . .) }}}}{{{{ end }}}}'
                       for i in range(40)) + '{{ define "d40" }}{{ len . }}{{ end }}'
    with pytest.raises(InvalidRequest, match="exceeds 64 MiB"):
        render_go_chat(doubling + '{{ template "d0" "ab" }}' + msgs, USER)
    assert render_go_chat(doubling + '{{ template "d30" "ab" }}' + msgs, USER) == str(2 ** 11)


def test_fill_in_the_middle_is_gos_execute_over_prompt_and_suffix():
    """Ollama's Template.Execute with a prompt and a suffix: the whole template over Prompt, Suffix, an empty
    Response and the think values (the golden: Go's output for those values)."""
    import json
    from pathlib import Path

    from velollm.engine.text.go_template.chat import render_go_insert

    fixtures = Path(__file__).parents[1] / "fixtures" / "go_template"
    golden = {g["name"]: g["output"] for g in json.loads((fixtures / "goldens.json").read_text())}
    data = {c["name"]: c for c in json.loads((fixtures / "cases.json").read_text())}["lang/fim-coder-insert"]["data"]
    source = (fixtures / "library" / "fim-coder.gotmpl").read_text()
    assert render_go_insert(source, data["Prompt"], data["Suffix"]) == golden["lang/fim-coder-insert"]
    with pytest.raises(InvalidRequest, match="failed on this prompt"):
        render_go_insert("{{ index .Suffix 99 }}", "p", "s")
