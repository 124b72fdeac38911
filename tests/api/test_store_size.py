"""--responses-max-store-size through the openai SDK: stored responses and stored chat completions filled
past a small cap on the scripted stub; the oldest of both are 404, the newest retrievable, a kept
conversation whose first turns were evicted still continues whole, the file on disk (WAL included) stays
near the cap, and the evictions are counted. The flag reaches the server config."""

from __future__ import annotations

import os
from pathlib import Path

import openai
import pytest

from tests.api.conftest import ServerHandle
from tests.api.test_responses_store import _serve

CAP, ROW_CAP = 256 << 10, 64 << 10
BIG = 20_000  # characters of input in one row: about a dozen rows fit under CAP


def _on_disk(db: Path) -> int:
    wal = Path(f"{db}-wal")
    return os.path.getsize(db) + (os.path.getsize(wal) if wal.exists() else 0)


def test_the_oldest_go_the_newest_stay_and_a_kept_chain_continues_whole(tmp_path):
    db = tmp_path / "r.sqlite"
    with _serve(db, responses_max_row_bytes=ROW_CAP, responses_max_store_bytes=CAP) as small:
        client, handle = small.client, ServerHandle("stub", str(small.client.base_url).rstrip("/").removesuffix("/v1"))
        small.engine.script = ["Fine."]
        first = client.responses.create(model="demo", input="Q one")
        turn, responses, completions = first, [], []
        for i in range(30):
            if i % 2:
                responses.append(client.responses.create(model="demo", input=f"{i} " + "r" * BIG))
            else:
                completions.append(client.chat.completions.create(
                    model="demo", messages=[{"role": "user", "content": f"{i} " + "c" * BIG}], store=True))
            if i % 5 == 4:  # the conversation goes on now and then: its newest turn stays recent
                turn = client.responses.create(model="demo", input=f"Q at {i}", previous_response_id=turn.id)
            assert os.path.getsize(db) <= CAP + ROW_CAP
        assert _on_disk(db) <= CAP + CAP // 16 + ROW_CAP  # a WAL checkpointed at a 16th of the cap

        for gone in (first, responses[0]):
            with pytest.raises(openai.NotFoundError):
                client.responses.retrieve(gone.id)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.retrieve(completions[0].id)
        assert client.responses.retrieve(responses[-1].id).output_text == "Fine."
        assert client.chat.completions.retrieve(completions[-1].id).choices[0].message.content == "Fine."
        assert [c.id for c in client.chat.completions.list(limit=100)][-1] == completions[-1].id

        # The kept last turn continues its conversation from the first turn: evicted turns are out of the API
        # only (as after a DELETE or the count cap), like OpenAI, where a response's context is its own.
        with pytest.raises(openai.BadRequestError, match="not found"):
            client.responses.create(model="demo", input="And?", previous_response_id=first.id)
        listed = client.responses.input_items.list(turn.id, order="asc", limit=100).data
        assert [i.content[0].text for i in listed][:3] == ["Q one", "Fine.", "Q at 4"]
        client.responses.create(model="demo", input="Q last", previous_response_id=turn.id)
        assert small.prompt().startswith("<user>Q one\n<assistant>Fine.\n<user>Q at 4\n")

        evicted = (handle.metric("velollm_store_rows_evicted_total", store="responses", limit="size"),
                   handle.metric("velollm_store_rows_evicted_total", store="chat_completions", limit="size"))
        assert evicted[0] >= 10 and evicted[1] >= 10


def test_the_store_size_flag_reaches_the_server_config():
    from velollm.cli import build_parser
    from velollm.commands import serve

    def config(*flags: str):
        return serve.build_config(build_parser().parse_args(["serve", *flags]), {})

    assert config().responses_max_store_bytes == 1 << 30
    assert config("--responses-max-store-size", "200MiB").responses_max_store_bytes == 200 << 20
    with pytest.raises(ValueError, match="responses_max_store_bytes"):
        config("--responses-max-store-size", "8MiB")  # under the 16 MiB row cap
    small = config("--responses-max-store-size", "8MiB", "--responses-max-row-size", "1MiB")
    assert small.responses_max_store_bytes == 8 << 20
