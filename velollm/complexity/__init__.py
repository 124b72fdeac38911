"""Routing by complexity: a virtual model name (default `auto`) that picks one of the configured
models per request, from features of the request (length, tools, code, math, depth, format,
reasoning) by ordered rules, and from a kNN over labeled examples (README.md in this folder).

    policy = RoutingPolicy.from_table(config["routing"])
    router = ComplexityRouter(policy)
    decision = await router.decide(body, "/v1/chat/completions")   # RouteDecision(model, route, reason)
"""

from velollm.complexity.features import RequestFeatures, extract
from velollm.complexity.policy import RouteDecision, RoutingPolicy
from velollm.complexity.router import ComplexityRouter

__all__ = ["ComplexityRouter", "RequestFeatures", "RouteDecision", "RoutingPolicy", "extract"]
