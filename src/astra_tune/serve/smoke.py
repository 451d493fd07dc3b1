"""The blue-green smoke test: the candidate, loaded here, must give one whole greedy answer.

Every server that sees a warming blue-green rollout runs it, so each has the candidate
loaded before traffic moves; the first that passes switches the rollout (the store's
transaction makes the others' switch a no-op). A candidate that cannot load, errors, or
is cut off by the token limit before its end of turn fails the rollout and never gets
a request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.concurrency import run_in_threadpool

from astra_tune.experiments.rollout import Rollout, RolloutStore
from astra_tune.serve.sampling import Sampling
from astra_tune.serve.state import ServerState

log = logging.getLogger(__name__)


async def smoke_test(state: ServerState, rollout: Rollout) -> tuple[bool, str, dict[str, Any]]:
    """Ask the candidate the rollout's smoke question greedily: (passed, why, what it saw)."""
    started = time.perf_counter()
    messages = [{"role": "user", "content": rollout.smoke_prompt}]
    parts: list[str] = []
    done = None
    try:
        model = state.catalog.get(rollout.candidate)
        events = await state.start_chat(
            model, messages, Sampling(max_tokens=rollout.smoke_max_tokens, temperature=0.0)
        )
        async for kind, value in events:
            if kind == "token":
                parts.append(value)
            elif kind == "done":
                done = value
    except Exception as exc:
        # Any failure, ours or llama.cpp's (a file that will not load raises ValueError),
        # means the candidate must not get traffic; the reason goes into the history.
        log.warning("smoke test of %s failed: %r", rollout.candidate, exc)
        what = getattr(exc, "what", None) or f"{type(exc).__name__}: {exc}"
        return False, f"{rollout.candidate} could not answer: {what}", {}
    answer = "".join(parts).strip()
    values: dict[str, Any] = {
        "answer": answer[:300],
        "finish_reason": done.finish_reason if done else None,
        "completion_tokens": done.completion_tokens if done else len(parts),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if done is None or done.finish_reason != "stop":
        return False, (f"no end of turn within {rollout.smoke_max_tokens} tokens "
                       "(raise --smoke-max-tokens if answers are long)"), values  # fmt: skip
    if not answer:
        return False, "the answer was empty", values
    return True, "smoke test passed", values


async def warm_and_switch(state: ServerState, rollout: Rollout) -> None:
    """Smoke-test a warming blue-green rollout here, then switch it or fail it."""
    assert state.registry is not None
    store = RolloutStore(state.registry)
    passed, reason, values = await smoke_test(state, rollout)
    if passed:
        moved = await run_in_threadpool(store.switch, rollout.name, values)
        log.info("blue-green %s: %s", rollout.name, "switched" if moved else "already switched")
    else:
        await run_in_threadpool(store.fail_smoke, rollout.name, reason, values)
        log.warning("blue-green %s: %s", rollout.name, reason)
