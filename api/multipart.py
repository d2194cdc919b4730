"""Reading a multipart body with Starlette's parser, strictly: a body that ends before its closing
boundary is refused, 400 ``incomplete_body``.

python-multipart's ``MultipartParser.finalize`` does not check that the closing boundary came (a TODO
in its source), and Starlette adds a part to the form only once the part's end is seen. A body cut
short would therefore be read as a form without its last part(s): a job could be taken with its
``params`` left out. The rest is Starlette's: file parts spooled to a temporary file past 1 MB
(``MultiPartParser.spool_max_size``), so a 50 MB upload does not sit in memory while it streams; text
fields capped at 1 MB; 400 ``bad_request`` for broken framing; files closed on every error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from maskq.errors import IncompleteBodyError


class _StrictMultiPartParser(MultiPartParser):
    """Starlette's parser, noting whether python-multipart saw the closing boundary (its ``end``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.complete = False

    def on_end(self) -> None:
        self.complete = True


@asynccontextmanager
async def read_form(request: Request, *, max_files: int, max_fields: int) -> AsyncIterator[FormData]:
    """The request's multipart form, its files closed on leaving; 400 for a malformed or cut-short body."""
    try:
        async with aclosing(request.stream()) as stream:
            parser = _StrictMultiPartParser(request.headers, stream, max_files=max_files, max_fields=max_fields)
            form = await parser.parse()
    except MultiPartException as exc:
        raise HTTPException(status_code=400, detail=exc.message) from None
    try:
        if not parser.complete:
            raise IncompleteBodyError("the multipart body ended before its closing boundary")
        yield form
    finally:
        await form.close()
