"""merge_identical_rules: an EBNF grammar (xgrammar's printed form) with each set of equivalent rules kept once.

xgrammar converts every JSON schema of a structural tag on its own: each tool of a request gets its own copy of
the JSON basics (strings, numbers, any-value, whitespace: about 140 rules for a tool of six typed parameters), and
the compiler computes a token mask for every state of every copy against the whole vocabulary. The first request
with agent-style tools (benchmarks/tool_grammar_compile.py --agent, Qwen3's vocabulary, 2 shared cores) compiled
for 10-19 s with 100 tools and 62-76 s with 300; with the copies merged, 0.8-1.5 s and 3.1-3.7 s (grammars of
61-65 MB held in the cache: 9.5-13 MB). Merging changes no language: rules are grouped by their
bodies with the rules they reference replaced by their group, refined until stable (the coarsest such partition,
so mutually recursive copies such as any-value / array / object merge too), and rules of one group derive the
same strings, as each step of the least fixpoint gives them the same set.
"""

from __future__ import annotations

import re

# A body's pieces: string literals and character classes (whose contents are never references), names, the rest.
_PIECE = re.compile(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]|[A-Za-z_][A-Za-z0-9_]*|[^"\[A-Za-z_]+|.', re.DOTALL)
# A rule's head: its name and its attributes ([max_tokens=N])
_RULE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(\[[^\]\n]*\])? ::= ", re.MULTILINE)


def merge_identical_rules(text: str, root: str = "root") -> str:
    """`text` with every rule equivalent to an earlier one dropped and its references renamed to that one (`root`
    keeps its name). A name is a reference where it names a rule of `text`."""
    starts = list(_RULE.finditer(text))
    if not starts or text[:starts[0].start()].strip():
        return text  # not xgrammar's printed form: left as it is
    bodies = {m.group(1): [f"{m.group(2) or ''} ::= ",
                           *_PIECE.findall(text[m.end():end.start() if end else len(text)].rstrip("\n"))]
              for m, end in zip(starts, [*starts[1:], None])}
    names = list(bodies)
    refs = {name: [p for p in pieces if p in bodies] for name, pieces in bodies.items()}
    shapes: dict[str, int] = {}
    group = {name: shapes.setdefault("".join("\0" if p in bodies else p for p in pieces), len(shapes))
             for name, pieces in bodies.items()}
    num_groups = len(shapes)
    while True:  # split groups whose members reference different groups, until none splits
        keys: dict[tuple[int, ...], int] = {}
        group = {name: keys.setdefault((group[name], *(group[r] for r in refs[name])), len(keys)) for name in names}
        if len(keys) == num_groups:
            break
        num_groups = len(keys)
    kept: dict[int, str] = {}
    for name in names:
        kept.setdefault(group[name], name)
    if root in group:
        kept[group[root]] = root
    return "".join(f"{name}{''.join(kept[group[p]] if p in bodies else p for p in pieces)}\n"
                   for name, pieces in bodies.items() if kept[group[name]] == name)
