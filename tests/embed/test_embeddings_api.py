"""The embedding endpoints through the official clients against a live `velollm serve`.

Native: all-MiniLM-L6-v2 pinned from its sentence-transformers folder, and the same weights converted
to GGUF in an Ollama store (loaded on demand), both checked against sentence-transformers; a tiny
nomic-bert GGUF in the store. Proxied: a second server that does not have the models forwards to the
first one as its Ollama upstream.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.gguf.test_ollama_store import make_store
from tests.serve_process import start_serve, stop_serve

from . import encoder_fixtures as fx
from .conftest import cosines

TEXTS = ["The cat sat on the mat.", "Embeddings power retrieval.", "東京 café naïve", "short",
         "A longer sentence about vector databases and semantic search. " * 3]
LONG = "word " * 400


@pytest.fixture(scope="module")
def expected(minilm_dir: Path) -> np.ndarray:
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS)


@pytest.fixture(scope="module")
def store(tmp_path_factory, minilm_dir: Path, tiny_nomic_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("embed_store")
    minilm_gguf = fx.write_encoder_gguf(root / "minilm.gguf", minilm_dir, "bert", pooling_type=1)
    nomic_gguf = fx.write_encoder_gguf(root / "nomic.gguf", tiny_nomic_dir, "nomic-bert")
    make_store(root / "models", minilm_gguf, ("registry.ollama.ai", "library", "all-minilm", "latest"))
    make_store(root / "models", nomic_gguf, ("registry.ollama.ai", "library", "nomic-tiny", "latest"))
    return root / "models"


@pytest.fixture(scope="module")
def native(tmp_path_factory, store: Path, minilm_dir: Path) -> Iterator[str]:
    proc, url, _, _ = start_serve(tmp_path_factory.mktemp("native"), "--model", str(minilm_dir),
                                  "--served-model-name", "minilm", "--no-upstream", "--max-loaded-models", "1",
                                  env={"OLLAMA_MODELS": str(store)})
    yield url
    stop_serve(proc)


@pytest.fixture(scope="module")
def front(tmp_path_factory, native: str) -> Iterator[str]:
    """A VeloLLM with an empty store whose Ollama upstream is `native`."""
    empty = tmp_path_factory.mktemp("empty_store")
    proc, url, _, _ = start_serve(tmp_path_factory.mktemp("front"), "--model", "demo", "--upstream", native,
                                  "--kv-cache-memory", "16MiB", env={"OLLAMA_MODELS": str(empty)})
    yield url
    stop_serve(proc)


def test_openai_sdk_float_and_base64(native: str, expected: np.ndarray):
    import openai

    client = openai.OpenAI(base_url=f"{native}/v1", api_key="none")
    default = client.embeddings.create(model="minilm", input=TEXTS)  # the SDK asks for base64 and decodes it
    floats = client.embeddings.create(model="minilm", input=TEXTS, encoding_format="float")
    for answer in (default, floats):
        got = np.array([d.embedding for d in answer.data])
        assert [d.index for d in answer.data] == list(range(len(TEXTS)))
        assert cosines(got, expected).min() >= 0.9999
    assert floats.model == "minilm" and floats.usage.prompt_tokens == floats.usage.total_tokens > len(TEXTS) * 2
    raw = httpx.post(f"{native}/v1/embeddings", json={"model": "minilm", "input": "hi", "encoding_format": "base64"})
    vector = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 1e-5


def test_openai_token_ids_and_dimensions(native: str, expected: np.ndarray, minilm_dir: Path):
    import openai
    from transformers import AutoTokenizer

    client = openai.OpenAI(base_url=f"{native}/v1", api_key="none")
    ids = [AutoTokenizer.from_pretrained(minilm_dir)(t)["input_ids"] for t in TEXTS[:2]]
    by_ids = client.embeddings.create(model="minilm", input=ids, encoding_format="float")
    assert cosines(np.array([d.embedding for d in by_ids.data]), expected[:2]).min() >= 0.9999
    short = client.embeddings.create(model="minilm", input=TEXTS[:1], dimensions=64, encoding_format="float")
    vector = np.array(short.data[0].embedding)
    assert vector.shape == (64,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    assert cosines(vector[None], expected[:1, :64]).min() >= 0.9999


def test_vllm_truncate_prompt_tokens_and_add_special_tokens(native: str, minilm_dir: Path):
    """vLLM's embedding extras: truncate_prompt_tokens keeps each input's last k tokens, the model's [CLS] and [SEP]
    kept and counted (HF's left truncation at max_length k; -1: the model's 256), add_special_tokens false leaves
    them out. Both were ignored: a long input with -1 was the context-length 400, a short one embedded whole."""
    import openai
    from transformers import AutoTokenizer

    client = openai.OpenAI(base_url=f"{native}/v1", api_key="none", max_retries=0)
    hf = AutoTokenizer.from_pretrained(minilm_dir, truncation_side="left")

    def vectors(inputs, **extra) -> tuple[np.ndarray, int]:
        answer = client.embeddings.create(model="minilm", input=inputs, encoding_format="float", extra_body=extra)
        return np.array([d.embedding for d in answer.data]), answer.usage.prompt_tokens

    for text, k, sent in ((LONG + "the end", -1, 256), (TEXTS[4], 9, 9), (TEXTS[0], 256, None)):
        want_ids = hf(text, truncation=True, max_length=sent or 256)["input_ids"]
        got, num_tokens = vectors(text, truncate_prompt_tokens=k)
        assert num_tokens == len(want_ids) and (sent is None or num_tokens == sent)
        assert cosines(got, vectors([want_ids])[0]).min() >= 0.9999
    ids = hf(TEXTS[1])["input_ids"]
    got, num_tokens = vectors([ids], truncate_prompt_tokens=3)
    assert num_tokens == 3 and cosines(got, vectors([ids[-3:]])[0]).min() >= 0.9999
    bare = hf(TEXTS[0], add_special_tokens=False)["input_ids"]
    got, num_tokens = vectors(TEXTS[0], add_special_tokens=False)
    assert num_tokens == len(bare) and cosines(got, vectors([bare])[0]).min() >= 0.9999
    got, num_tokens = vectors(TEXTS[0], add_special_tokens=False, truncate_prompt_tokens=2)
    assert num_tokens == 2 and cosines(got, vectors([bare[-2:]])[0]).min() >= 0.9999
    for k, match in ((0, "-1 or at least 1"), (257, "greater than"), (2, "no room"), ("5", "integer")):
        with pytest.raises(openai.BadRequestError, match=match) as err:
            client.embeddings.create(model="minilm", input=TEXTS[0], extra_body={"truncate_prompt_tokens": k})
        assert err.value.body["param"] == "truncate_prompt_tokens"


def test_openai_errors(native: str):
    import openai

    client = openai.OpenAI(base_url=f"{native}/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="context length of 256"):
        client.embeddings.create(model="minilm", input=LONG)
    with pytest.raises(openai.BadRequestError, match="input"):
        client.embeddings.create(model="minilm", input="")
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="minilm", input="x", dimensions=1000)
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-model", input="x")
    assert client.embeddings.create(model="minilm", input="still serving").data


def test_ollama_client_embed_loads_gguf_on_demand(native: str, expected: np.ndarray):
    import ollama

    client = ollama.Client(host=native)
    answer = client.embed(model="all-minilm", input=TEXTS)
    assert cosines(np.array(answer.embeddings), expected).min() >= 0.9999  # GGUF of the same weights
    assert answer.model == "all-minilm"  # as the request spelled it (loaded as all-minilm:latest), as Ollama answers
    openai_answer = httpx.post(f"{native}/v1/embeddings", json={"model": "all-minilm", "input": "hi"}, timeout=60)
    assert openai_answer.json()["model"] == "all-minilm", openai_answer.text
    assert answer.prompt_eval_count > len(TEXTS) * 2 and answer.total_duration > 0
    legacy = client.embeddings(model="all-minilm", prompt=TEXTS[0])
    assert cosines(np.array([legacy.embedding]), expected[:1]).min() >= 0.9999
    # Ollama's legacy route returns the pooled vector as computed, not normalised (/api/embed normalises)
    assert abs(np.linalg.norm(legacy.embedding) - 1) > 0.01
    truncated = client.embed(model="all-minilm", input=LONG)
    assert len(truncated.embeddings[0]) == 384
    with pytest.raises(ollama.ResponseError, match="context length") as err:
        client.embed(model="all-minilm", input=LONG * 2, truncate=False)  # the GGUF allows 512
    assert err.value.status_code == 400
    running = {m.model: m for m in client.ps().models}
    assert "all-minilm:latest" in running and running["all-minilm:latest"].context_length == 512
    show = client.show("all-minilm")
    assert show.capabilities == ["embedding"] and show.modelinfo["general.architecture"] == "bert"
    tags = {m["name"]: m for m in httpx.get(f"{native}/api/tags", timeout=30).json()["models"]}
    assert tags["minilm"]["capabilities"] == ["embedding"] and "all-minilm:latest" in tags


def _gone(client, model: str) -> bool:
    for _ in range(100):  # keep_alive 0: unloaded once the request has ended
        if model not in {m.model for m in client.ps().models}:
            return True
        time.sleep(0.05)
    return False


def test_keep_alive_and_load_only_requests(native: str):
    import ollama

    client = ollama.Client(host=native)
    assert client.embed(model="nomic-tiny", input=[]).embeddings == []  # loads only
    assert "nomic-tiny:latest" in {m.model for m in client.ps().models}
    assert client.embed(model="nomic-tiny", input=[], keep_alive=0).embeddings == []  # `ollama stop`
    assert _gone(client, "nomic-tiny:latest")
    assert client.embeddings(model="nomic-tiny", prompt="").embedding == []  # legacy load-only
    vectors = client.embed(model="nomic-tiny", input=["one", "two"], keep_alive=0).embeddings
    assert len(vectors) == 2 and len(vectors[0]) == 64
    assert _gone(client, "nomic-tiny:latest")


def test_metrics_describe_embedding_models(native: str):
    """/metrics was a 500 once an embedding model was loaded (it has no settings() like engines have)."""
    r = httpx.get(f"{native}/metrics", timeout=30)
    assert r.status_code == 200, r.text
    info = [line for line in r.text.splitlines() if line.startswith('velollm_engine_info{') and 'model="minilm"' in line]
    assert info and 'dtype="float32"' in info[0], info
    assert 'velollm_kv_cache_bytes{model="minilm"} 0.0' in r.text


def test_generation_model_has_no_embeddings(front: str):
    r = httpx.post(f"{front}/v1/embeddings", json={"model": "demo", "input": "x"}, timeout=30)
    assert r.status_code == 400 and "does not support embeddings" in r.json()["error"]["message"]


def test_embedding_model_does_not_generate(native: str):
    """Chat, completions, Responses and Ollama generate/chat on an embedding model were 500s (its
    engine has no chat template nor tokenizer encode); Ollama answers 400 '"M" does not support chat'."""
    import ollama
    import openai

    client = openai.OpenAI(base_url=f"{native}/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError, match='"minilm" does not support chat') as err:
        client.chat.completions.create(model="minilm", messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError, match="does not support completions"):
        client.completions.create(model="minilm", prompt="hi")
    with pytest.raises(openai.BadRequestError, match="does not support responses"):
        client.responses.create(model="minilm", input="hi")
    with pytest.raises(ollama.ResponseError, match="does not support generate") as oerr:
        ollama.Client(host=native).generate(model="all-minilm", prompt="hi")
    assert oerr.value.status_code == 400
    with pytest.raises(ollama.ResponseError, match="does not support chat"):
        ollama.Client(host=native).chat(model="minilm", messages=[{"role": "user", "content": "hi"}])
    assert client.embeddings.create(model="minilm", input="still serving").data


def test_models_the_front_lacks_are_proxied(front: str, expected: np.ndarray):
    import ollama
    import openai

    answer = ollama.Client(host=front).embed(model="all-minilm", input=TEXTS)
    assert cosines(np.array(answer.embeddings), expected).min() >= 0.9999
    client = openai.OpenAI(base_url=f"{front}/v1", api_key="none")
    assert cosines(np.array([d.embedding for d in client.embeddings.create(model="minilm", input=TEXTS).data]),
                   expected).min() >= 0.9999  # the SDK asks base64 and decodes it
    for fmt in ("float", "base64"):  # asked explicitly, the SDK hands the answer back as it came
        got = client.embeddings.create(model="minilm", input=TEXTS, encoding_format=fmt)
        vectors = [d.embedding if fmt == "float" else np.frombuffer(base64.b64decode(d.embedding), "<f4")
                   for d in got.data]
        assert cosines(np.array(vectors), expected).min() >= 0.9999


def test_langchain_ollama_embeddings(native: str, expected: np.ndarray):
    langchain_ollama = pytest.importorskip("langchain_ollama")
    embeddings = langchain_ollama.OllamaEmbeddings(model="all-minilm", base_url=native)
    docs = np.array(embeddings.embed_documents(TEXTS))
    query = np.array([embeddings.embed_query(TEXTS[0])])
    assert cosines(docs, expected).min() >= 0.9999
    assert cosines(query, expected[:1]).min() >= 0.9999


def test_langchain_openai_embeddings(native: str, expected: np.ndarray):
    """LangChain's OpenAIEmbeddings sends text with check_embedding_ctx_length=False (the setting for servers
    other than OpenAI's); by default it sends tiktoken ids, which are not this model's: a 400 that says so."""
    import openai

    langchain_openai = pytest.importorskip("langchain_openai")
    embeddings = langchain_openai.OpenAIEmbeddings(model="minilm", base_url=f"{native}/v1", api_key="none",
                                                   check_embedding_ctx_length=False)
    assert cosines(np.array(embeddings.embed_documents(TEXTS)), expected).min() >= 0.9999
    assert cosines(np.array([embeddings.embed_query(TEXTS[1])]), expected[1:2]).min() >= 0.9999
    client = openai.OpenAI(base_url=f"{native}/v1", api_key="none")
    with pytest.raises(openai.BadRequestError) as err:  # cl100k ids of "The cat sat on the mat."
        client.embeddings.create(model="minilm", input=[[791, 8415, 7731, 389, 279, 5634, 13], [100257]])
    assert err.value.body["param"] == "input"
    assert "outside the vocabulary" in err.value.body["message"]
    assert "check_embedding_ctx_length=False" in err.value.body["message"]


@pytest.mark.parametrize("keep_alive", ["abc", "3600"])
def test_bad_keep_alive_is_a_400_for_a_pinned_model(native: str, keep_alive):
    """A pinned model never parses keep_alive when routed, so /api/embed and /api/embeddings answered 200 to
    `keep_alive: "abc"`, which Ollama (and VeloLLM's /api/chat) refuse: `time: invalid duration`."""
    import ollama

    client = ollama.Client(host=native)
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="minilm", input="x", keep_alive=keep_alive)
    assert err.value.status_code == 400 and "invalid duration" in err.value.error
    r = httpx.post(f"{native}/api/embeddings", json={"model": "minilm", "prompt": "x", "keep_alive": keep_alive})
    assert r.status_code == 400 and set(r.json()) == {"error"}, r.text
    assert len(client.embed(model="minilm", input="x", keep_alive="1m").embeddings[0]) == 384
