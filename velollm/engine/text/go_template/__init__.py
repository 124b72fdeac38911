"""A Go text/template interpreter: what Ollama's model templates (the TEMPLATE layer) are written in."""

from velollm.engine.text.go_template.errors import GoTemplateError
from velollm.engine.text.go_template.executor import execute
from velollm.engine.text.go_template.parser import parse
from velollm.engine.text.go_template.values import GoStruct, Named, go_json

__all__ = ["GoStruct", "GoTemplateError", "Named", "execute", "go_json", "parse"]
