"""with_model_defaults: the params layer's values under their OpenAI names, for the fields a body leaves out."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from velollm.api.openai_defaults import with_model_defaults
from velollm.errors import InvalidRequest


def _served(options: dict[str, Any], layer_error: str = "") -> Any:
    info = SimpleNamespace(default_options=options, layer_error=layer_error)
    return SimpleNamespace(name="m:latest", engine=SimpleNamespace(source=SimpleNamespace(info=info)))


LAYER = {"temperature": 0.6, "top_k": 20, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1, "seed": 7,
         "stop": ["<end>"], "num_predict": 64, "num_ctx": 4096, "mirostat": 0}


def test_the_fields_left_out_take_the_layers_values_under_openai_names():
    assert with_model_defaults({"model": "m"}, _served(LAYER)) == {
        "model": "m", "temperature": 0.6, "top_k": 20, "top_p": 0.95, "min_p": 0.05, "repetition_penalty": 1.1,
        "seed": 7, "stop": ["<end>"], "max_tokens": 64}


def test_a_sent_field_wins_and_null_counts_as_left_out():
    body = {"model": "m", "temperature": 1.5, "stop": "x", "top_k": None, "max_completion_tokens": 9}
    out = with_model_defaults(body, _served(LAYER))
    assert (out["temperature"], out["stop"], out["top_k"]) == (1.5, "x", 20)  # the request's stop replaces
    assert "max_tokens" not in out  # any budget the request gives is its own


@pytest.mark.parametrize("layer", [{"seed": -1, "num_predict": -1}, {"num_predict": -2}, {}])
def test_ollamas_random_seed_and_unlimited_budget_are_the_defaults_already(layer):
    assert with_model_defaults({"model": "m"}, _served(layer)) == {"model": "m"}


@pytest.mark.parametrize("options, layer_error", [({"temperature": "hot"}, ""), ({}, "params layer is not JSON")])
def test_an_invalid_layer_is_a_400_naming_the_model(options, layer_error):
    with pytest.raises(InvalidRequest, match="'m:latest'") as info:
        with_model_defaults({"model": "m"}, _served(options, layer_error))
    assert info.value.param == "model"
