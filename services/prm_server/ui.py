"""The viewer: one self-contained page (`ui.html`) where a person pastes a problem and a
program, or opens a row of a labeled dataset, and sees each line coloured by its PRM score.

The page is static and holds no secret, so it is served without the API key; the browser
sends the key the user types in with each `/v1/score` call. Its Content-Security-Policy lets
it reach this server only: no CDN, font or analytics request can slip in later.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel

from codeprm.api.prm import Aggregate
from codeprm.render import score_range
from codeprm.services.prm_server.settings import PrmSettings
from codeprm.services.prm_server.state import Scorer

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

router = APIRouter(tags=["viewer"])


class ViewerConfig(BaseModel):
    """What the page needs to know before it scores (the viewer's own endpoint)."""

    auth_required: bool
    label_scheme: str | None
    """None while the model loads; the page then assumes -1 .. 1 and asks again later."""
    low: float
    high: float
    aggregate: Aggregate


@cache
def _page() -> str:
    return resources.files("codeprm.services.prm_server").joinpath("ui.html").read_text("utf-8")


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    # Relative, so that the redirect still lands on the viewer behind a path prefix.
    return RedirectResponse("ui")


@router.get("/ui", response_class=HTMLResponse)
async def viewer() -> HTMLResponse:
    """The viewer page: paste a program, or open a labeled JSONL file, and see its scores."""
    return HTMLResponse(_page(), headers={"Content-Security-Policy": CSP})


@router.get("/ui/config", response_model=ViewerConfig)
async def viewer_config(request: Request) -> ViewerConfig:
    settings: PrmSettings = request.app.state.settings
    scorer: Scorer | None = request.app.state.scorer
    low, high = -1.0, 1.0
    scheme = None
    if scorer is not None:
        scheme = scorer.prm.metadata.label_scheme
        low, high = score_range(scorer.prm.metadata)
    return ViewerConfig(
        auth_required=settings.api_key is not None,
        label_scheme=scheme,
        low=low,
        high=high,
        aggregate=settings.aggregate,
    )
