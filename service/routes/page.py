"""GET /: the single static web page (service/static/index.html): RETRO beside the larger model."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

PAGE = Path(__file__).resolve().parent.parent / "static" / "index.html"


@router.get("/")
async def page():
    return FileResponse(PAGE, media_type="text/html")
