"""PRM scoring endpoints: `/v1/score` (per-line scores) and OpenRLHF's `/get_reward`."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request

from codeprm.api.prm import (
    Aggregate,
    GetRewardRequest,
    GetRewardResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
    ScoreResult,
)
from codeprm.extract import extract_code
from codeprm.geometry import EncodedLines
from codeprm.prm_model import LoadedPrm, encode
from codeprm.services.prm_server.errors import check_text, scoring_error
from codeprm.services.prm_server.scoring import result
from codeprm.services.prm_server.settings import PrmSettings
from codeprm.services.prm_server.state import Scorer
from codeprm.serving.errors import BadInput, NotReady, PayloadTooLarge, Unauthorized


# Dependencies are async: FastAPI runs plain `def` ones in a thread pool, a thread hand-off
# per request for a few attribute lookups.
async def scorer(request: Request) -> Scorer:
    current: Scorer | None = request.app.state.scorer
    if current is None:
        raise NotReady("the model is not loaded yet; see /readyz")
    return current


async def authorized(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    key = request.app.state.settings.api_key
    if key is None:
        return
    token = (authorization or "").removeprefix("Bearer ").strip()
    if not secrets.compare_digest(token.encode(), key.encode()):
        raise Unauthorized("missing or wrong bearer token")


router = APIRouter(dependencies=[Depends(authorized)])
ScorerDep = Annotated[Scorer, Depends(scorer)]


@router.post("/v1/score", response_model=ScoreResponse)
async def score(body: ScoreRequest, scorer: ScorerDep) -> ScoreResponse:
    """Per-line scores of each program, and one aggregate over its code lines."""
    results = await score_items(scorer, body.items, body.aggregate)
    return ScoreResponse(model=scorer.prm.name, results=results)


@router.post("/get_reward", response_model=GetRewardResponse)
async def get_reward(body: GetRewardRequest, scorer: ScorerDep) -> GetRewardResponse:
    """OpenRLHF's remote reward protocol: one scalar per query (prompt + response)."""
    for i, query in enumerate(body.query):
        check_text(f"query {i}", query)
    for i, prompt in enumerate(body.prompts):
        check_text(f"prompt {i}", prompt)
    items = [
        ScoreItem(prompt=prompt, code=extract_code(response))
        for prompt, response in _split_queries(body, scorer.prm)
    ]
    results = await score_items(scorer, items, None) if items else []
    rewards = [r.aggregate if r.aggregate is not None else 0.0 for r in results]
    return GetRewardResponse(
        rewards=rewards,
        scores=rewards,
        extra_logs={
            "prm_lines": [float(len(r.line_scores)) for r in results],
            "prm_tokens": [float(r.num_tokens) for r in results],
        },
    )


def _split_queries(body: GetRewardRequest, prm: LoadedPrm) -> list[tuple[str, str]]:
    """(prompt, response) pairs: OpenRLHF sends prompt + response, padded with pad/eos."""
    tokenizer = prm.tokenizer
    noise = [t for t in (tokenizer.pad_token, tokenizer.eos_token) if t]
    pairs = []
    for i, query in enumerate(body.query):
        for token in noise:
            while query.endswith(token):
                query = query[: -len(token)]
            while query.startswith(token):
                query = query[len(token) :]
        prompt = body.prompts[i] if i < len(body.prompts) else ""
        if prompt and query.startswith(prompt):
            pairs.append((prompt, query[len(prompt) :]))
        else:
            pairs.append(("", query))
    return pairs


async def score_items(
    scorer: Scorer, items: list[ScoreItem], aggregate: Aggregate | None
) -> list[ScoreResult]:
    settings: PrmSettings = scorer.settings
    if len(items) > settings.max_items:
        raise PayloadTooLarge(f"{len(items)} items; at most {settings.max_items} per request")
    encoded: list[EncodedLines] = []
    for i, item in enumerate(items):
        chars = len(item.prompt) + len(item.code)
        if chars > settings.max_chars:
            raise PayloadTooLarge(
                f"item {i}: {chars} characters; the limit is {settings.max_chars}"
            )
        check_text(f"item {i}: prompt", item.prompt)
        check_text(f"item {i}: code", item.code)
        try:
            encoded.append(encode(scorer.prm, item, max_tokens=settings.max_tokens + 1))
        except Exception as exc:  # text the tokenizer refuses is the request's problem
            raise BadInput(f"item {i}: the tokenizer cannot take it: {exc!r}"[:1000]) from exc
        if encoded[-1].truncated:
            raise PayloadTooLarge(f"item {i}: more than {settings.max_tokens} tokens")
    # An item without a single token (an empty program after an empty prompt, with a
    # tokenizer that adds no special tokens) has nothing to score: no forward pass for it.
    scored = [e for e in encoded if e.input_ids]
    try:
        scores = await scorer.batcher.submit(scored, [len(e.input_ids) for e in scored])
    except Exception as exc:
        raise scoring_error(exc) from exc
    by_item = iter(scores)
    how = aggregate or settings.aggregate
    return [
        result(e, next(by_item) if e.input_ids else [None] * len(e.line_tokens), how)
        for e in encoded
    ]
