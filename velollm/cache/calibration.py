"""From --semantic-max-error to the similarity threshold.

vCache (arXiv 2502.03771) models the chance that a cached answer is wrong as a sigmoid of the
similarity and serves a hit only where that chance is under the user's bound. Here the sigmoid is one
global curve, fitted (`python benchmarks/cache.py calibrate`) on the dev split of the labeled pairs
that pass the Verifier (weak L2 penalty, 0.1 on the standardized cosine): P(different question | cosine s) = 1 / (1 + exp(-(A*s + B))).
The threshold for a bound e is where that curve falls to e.
"""

from __future__ import annotations

import math

A = -58.842
B = 46.503


def threshold_for(max_error: float) -> float:
    """The lowest cosine whose estimated chance of answering a different question is <= max_error."""
    if not 0 < max_error < 1:
        raise ValueError(f"max error must be in (0, 1), got {max_error}")
    return min(0.999, (math.log(max_error / (1 - max_error)) - B) / A)
