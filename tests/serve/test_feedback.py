"""Every answer has an id; feedback on it is stored in the registry database, kept on restart."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
from sqlalchemy import select

from astra_tune.experiments.store import ExperimentStore, parse_spec
from astra_tune.experiments.tables import FeedbackRow, ResponseRow, VoteRow
from astra_tune.registry.index import session
from astra_tune.registry.store import Registry
from tests.serve.conftest import start_server, stop


def test_answers_are_recorded_and_rated_on_both_apis(
    tmp_path: Path, two_versions: Registry, tiny_gguf_file: Path
) -> None:
    ExperimentStore(two_versions).create(parse_spec({
        "name": "wren-ab", "model": "orrery",
        "arms": {"control": "orrery:1.0.0", "candidate": "orrery:1.0.1"}, "split": [50, 50],
    }))  # fmt: skip
    env = {"ASTRA_HOME": str(tmp_path / "home")}
    server = start_server(tiny_gguf_file, env=env, serve_file=False)
    try:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)

        def feedback(**body: object) -> httpx.Response:
            return httpx.post(f"{server.url}/v1/feedback", json=body, timeout=30)

        question = [{"role": "user", "content": "Where is the orrery?"}]
        raw = client.chat.completions.with_raw_response.create(
            model="orrery", messages=question, max_tokens=4, user="alice"
        )
        reply = raw.parse()
        assert raw.headers["x-astra-response-id"] == reply.id
        arm = raw.headers["x-astra-arm"]
        rated = feedback(response_id=reply.id, rating=1, reason="accurate")
        assert rated.status_code == 201, rated.text
        version = {"control": "1.0.0", "candidate": "1.0.1"}[arm]
        assert rated.json() == {"response_id": reply.id, "rating": 1, "experiment": "wren-ab",
                                "arm": arm, "version": version, "created": True}  # fmt: skip
        again = feedback(response_id=reply.id, rating=-1, tags=["vague"])
        assert again.status_code == 200
        assert again.json()["created"] is False

        ollama_reply = httpx.post(f"{server.url}/api/chat", timeout=60, json={
            "model": "orrery", "stream": False, "options": {"num_predict": 4},
            "messages": question,
        })  # fmt: skip
        other = ollama_reply.headers["x-astra-response-id"]
        vote = feedback(response_ids=[reply.id, other], winner="b")
        assert vote.status_code == 201, vote.text

        unknown = feedback(response_id="chatcmpl-nosuch", rating=1)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["param"] == "response_id"
        assert "chatcmpl-nosuch" in unknown.json()["error"]["message"]
        bad = feedback(response_id=reply.id, rating=5)
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "rating"
        neither = feedback(rating=1)
        assert neither.status_code == 400
        assert "response_id" in neither.json()["error"]["message"]
        bad_vote = feedback(response_ids=[reply.id, "resp-nosuch"], winner="a")
        assert bad_vote.status_code == 404
        assert bad_vote.json()["error"]["param"] == "response_ids.1"

        card = httpx.get(f"{server.url}/v1/experiments/wren-ab", timeout=30).json()
        assert sum(a["requests"] for a in card["arms"]) == 2
        assert sum(a["ratings"] for a in card["arms"]) == 1
        assert sum(a["random_units"] for a in card["arms"]) == 1  # the Ollama call named no one
        assert card["votes"] == 1
        assert card["decision"] == "keep collecting"
        refused = httpx.post(f"{server.url}/v1/experiments", timeout=30, json={
            "name": "second", "model": "orrery:1.0.0", "split": [70, 20],
            "arms": {"control": "orrery:1.0.0", "candidate": "orrery:1.0.1"},
        })  # fmt: skip
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "split"
        assert "weights sum to 90, not 100" in refused.json()["error"]["message"]
        missing = httpx.get(f"{server.url}/v1/experiments/nosuch", timeout=30)
        assert missing.status_code == 404
    finally:
        stop(server)

    # After the server is gone, everything is in the registry database.
    with session(two_versions.engine) as db:
        first = db.get(ResponseRow, reply.id)
        assert first is not None
        assert (first.experiment, first.arm, first.version) == ("wren-ab", arm, version)
        assert first.unit_kind == "user"
        assert "alice" not in first.unit
        assert first.finish_reason in ("stop", "length")
        assert first.completion_tokens == reply.usage.completion_tokens  # type: ignore[union-attr]
        assert first.answer == reply.choices[0].message.content
        assert first.messages == question
        assert first.api == "openai"
        assert db.get(ResponseRow, other).api == "ollama"  # type: ignore[union-attr]
        rating = db.get(FeedbackRow, reply.id)
        assert rating is not None
        assert (rating.rating, rating.tags, rating.reason) == (-1, ["vague"], None)
        votes = list(db.scalars(select(VoteRow)))
        assert [(v.first, v.second, v.winner) for v in votes] == [(reply.id, other, "b")]
