"""Text signals for routing: an estimated token count, and scores for code and for math.

No tokenizer and no model: the router runs before any model is chosen, on every request for the
virtual name, so these are linear-time regular expressions over a bounded window of the text.
Each score counts signals; a routing rule asks for `code = true` / `math = true`, which holds at
`CODE_THRESHOLD` / `MATH_THRESHOLD` and above (velollm/complexity/README.md lists the signals).
"""

from __future__ import annotations

import re

SCAN_CHARS = 64 * 1024  # code and math are looked for in the last 64 KiB (where the question is)
COUNT_CHARS = 256 * 1024  # tokens are counted exactly up to here, then extrapolated from this sample
CODE_THRESHOLD = 2
MATH_THRESHOLD = 2
_CAP = 3  # one kind of signal adds at most this much (a long file of `;` lines is not 500 times code)

_TOKEN = re.compile(r"\w+|[^\w\s]")
# Every pattern is linear in the text: no unbounded `.*` before a literal (a 64 KiB line of `impl`
# would otherwise cost quadratic time).

_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)
# Syntax that is rare in prose (definitions, imports, statements) counts 2 from its first match; syntax
# that prose has at times (operators, `;` line ends, tags) counts 1 a match.
_CODE_STRONG = [re.compile(p, re.MULTILINE) for p in (
    r"\bdef \w+\s*\(",
    r"\bfunction\s*\w*\s*\(",
    r"\bclass \w+\s*[:({]",
    r"^\s*(import \w+|from [\w.]+ import )",
    r"^\s*#include\s*[<\"]",
    r"\b(public|private|static) (static |final )?(void|int|class|String)\b",
    r"\bfn \w+\s*\(|\blet mut\b|\bimpl\b.{0,200}\{",
    r"\bfunc \w+\s*\(",
    r"\b(console\.log|printf|println!?|System\.out)\s*\(",
    r"\bSELECT\b.{1,200}\bFROM\b|\bINSERT INTO\b|\bCREATE TABLE\b",
    r"^\s*(if|for|while)\s*\(.{0,200}\)\s*\{?\s*$",
)]
_CODE_WEAK = [re.compile(p, re.MULTILINE) for p in (
    r":= |\b(const|let|var) \w+\s*=",
    r"=>|->|::|\+\+|&&|\|\||!==|===",
    r"[;{]\s*$",
    r"</?[a-z]+[^>\n]{0,200}>",
)]
# Words about code: names of languages and tools count 2 (they make a code question alone), the others 1.
_CODE_STRONG_WORDS = re.compile(
    r"\b(python|javascript|typescript|node\.?js|java|golang|c\+\+|c#|sql|bash|powershell|kubernetes|docker"
    r"|regex|compiler|stack ?trace|traceback|refactor\w*|git|npm|pip|html|css|react|django)\b",
    re.IGNORECASE)
_CODE_WORDS = re.compile(
    r"\b(code|coding|programming|program|function|method|api|script|snippet|algorithm|bug|debug\w*|exception"
    r"|error|implement\w*|server|module|class|loop|variable|array|compil\w+|repository|unit tests?|database"
    r"|query|endpoint|framework|library|rust|linux|json|yaml|time complexity)\b", re.IGNORECASE)

_MATH_STRONG_SYNTAX = [re.compile(p, re.MULTILINE) for p in (
    r"\\(frac|int|sum|prod|sqrt|lim|infty|alpha|beta|theta|partial|cdot|leq|geq|mathbb)\b",
    r"[∫∑∏√∞≤≥≠±∂]",
)]
_MATH_SYNTAX = [re.compile(p, re.MULTILINE) for p in (
    r"\$[^$\n]{1,200}\$",
    r"\d\s*[+*^×÷=]\s*\d|\d\s+[-/]\s+\d",  # not 2024-05-01 or 1/2/2024
    r"\b[a-z]\s*\^\s*\d|\b[a-z]\s*=\s*-?\d",
    r"π",
    r"\b(sin|cos|tan|log|ln|exp)\s*\(",
)]
# Words that make a math question on their own count 2, the others 1.
_MATH_STRONG = re.compile(
    r"\b(mathematics|equations?|integral|derivative|differentiate|theorem|prove|proof|lemma|probability"
    r"|eigen\w*|polynomial|logarithm|calculus|divisible|combinatorics|permutations?|factorial|arithmetic)\b",
    re.IGNORECASE)
_MATH_WORDS = re.compile(
    r"\b(math|maths|integrate|calculate|compute|solve|matrix|matrices|primes?|vector|algebra|geometry"
    r"|statistics|variance|limit|integers?|sum|average|how many ways|infinity|fraction|percent\w*|ratio"
    r"|show that)\b", re.IGNORECASE)


def estimate_tokens(text: str) -> int:
    """About the tokens a BPE tokenizer makes: one per word and one per punctuation mark. Texts over
    COUNT_CHARS are counted on their first COUNT_CHARS and scaled (a 32 MB body costs no more)."""
    if len(text) <= COUNT_CHARS:
        return len(_TOKEN.findall(text))
    sample = len(_TOKEN.findall(text[:COUNT_CHARS]))
    return round(sample * len(text) / COUNT_CHARS)


def _window(text: str) -> str:
    return text[-SCAN_CHARS:]


def _count(patterns: list[re.Pattern[str]], text: str) -> int:
    return sum(min(_CAP, len(p.findall(text))) for p in patterns)


def _count_strong(patterns: list[re.Pattern[str]], text: str) -> int:
    return sum(min(_CAP, n + 1) if (n := len(p.findall(text))) else 0 for p in patterns)


def code_score(text: str) -> int:
    """Fenced blocks count 3 each; each syntax pattern up to 3 (a strong one 2 from its first match);
    words about code: 2 for a language or tool (python, sql, docker, git...), 1 for the others (function,
    debug, server...), up to 3 in all."""
    text = _window(text)
    fences = (len(_FENCE.findall(text)) + 1) // 2
    words = 2 * len(_CODE_STRONG_WORDS.findall(text)) + len(_CODE_WORDS.findall(text))
    return 3 * min(_CAP, fences) + _count_strong(_CODE_STRONG, text) + _count(_CODE_WEAK, text) + min(_CAP, words)


def math_score(text: str) -> int:
    """Syntax patterns up to 3 each (LaTeX and math symbols 2 from their first match; arithmetic, $..$,
    functions 1 a match); math words (2 for one that
    makes a math question alone: theorem, integral, probability...; 1 for the others) up to 3 in all."""
    text = _window(text)
    words = 2 * len(_MATH_STRONG.findall(text)) + len(_MATH_WORDS.findall(text))
    return _count_strong(_MATH_STRONG_SYNTAX, text) + _count(_MATH_SYNTAX, text) + min(_CAP, words)
