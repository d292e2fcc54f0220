"""An HTTP reward server (FastAPI) over a :class:`~vrm.scoring.scorer.RewardScorer` (an export) or a
:class:`~vrm.scoring.base.TextScorer` (the white-box proxy: rewards only, no chat template).

- ``POST /get_reward``: OpenRLHF's remote reward model request ``{"query": [full conversation texts]}`` (an optional
  ``prompts`` list of the same length gives each query's prompt prefix; other keys such as ``labels`` are ignored),
  answered ``{"rewards": [...]}``. Each query is split into prompt and response by
  :func:`vrm.scoring.base.split_query`: after its prompt prefix when ``prompts`` gives one it starts with, else
  after the LAST occurrence of the response marker (``--response-marker``; default: the chat template's generation
  prompt, or ``"\\n\\nAssistant:"`` without a template). A query with neither gets a 422 naming it.
- ``POST /score``: ``{"pairs": [{"prompt": str | [messages], "response": str}], "num_samples": 0}`` (a pair may
  add ``question_type`` and ``reference``, which the proxy uses) answered ``{"rewards": [...]}`` plus, for a VRM, ``objective_scores`` and ``weights`` (and ``reward_std`` when
  ``num_samples`` > 0).
- ``GET /health``: ``{"status": "ok", ...}``.

Requests over the limits get a 413 (a body over the limit as soon as it passes it, chunked or not), malformed ones a
422 (FastAPI's validation: a field of the wrong type, a message role not in ``MESSAGE_ROLES``, text that is not
text, such as a lone surrogate ``"\\ud800"``), each with a message; the server keeps serving. A request is checked
and tokenised on its own; then the texts of concurrent requests are scored together in shared forward passes and
each request gets exactly its own outputs (:mod:`vrm.scoring.batching`; ``BatchSettings(enabled=False)``, i.e.
``vrm-serve --no-batching``: one request at a time under a lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from vrm.config.eval import MAX_UNCERTAINTY_SAMPLES
from vrm.data.limits import MAX_MESSAGES, MAX_TEXT_CHARS
from vrm.data.schema import MESSAGE_ROLES
from vrm.data.textio import check_text
from vrm.scoring.base import QuerySplitError, TextScorer
from vrm.scoring.batching import Batcher, BatchSettings, SerialScorer
from vrm.scoring.scorer import RewardScorer

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for."""

    #: Texts (queries or pairs) per request.
    max_batch_size: int = 256
    #: Characters per text (a query, or a pair's prompt and response together): the readers' text limit.
    max_text_chars: int = MAX_TEXT_CHARS
    #: Monte Carlo samples for ``reward_std`` on ``/score``.
    max_num_samples: int = MAX_UNCERTAINTY_SAMPLES
    #: Seconds a connection may take to send a request's line and headers (from its first byte, or from when it
    #: opened or its previous response ended); a slower one is closed (slowloris).
    header_timeout: float = 10.0
    #: Seconds a request may take to send its whole body once its headers are in; a slower one gets a 408.
    body_timeout: float = 60.0

    def __post_init__(self):
        for key, value in asdict(self).items():
            if not value >= (0 if key == "max_num_samples" else 1e-3 if key.endswith("timeout") else 1):
                raise ValueError(f"{key}={value} must be positive")

    @property
    def max_body_bytes(self) -> int:
        """Largest request body read at all: every text at its limit, JSON-escaped (up to 6 bytes a character)."""
        return self.max_batch_size * self.max_text_chars * 6 + (1 << 20)


#: A string that is text (:func:`vrm.data.textio.check_text`): a lone surrogate gets a 422 naming the field.
Text = Annotated[str, AfterValidator(check_text)]


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal[MESSAGE_ROLES]
    content: Text


class PairIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: Text | Annotated[list[MessageIn], Field(min_length=1, max_length=MAX_MESSAGES)]
    response: Text
    question_type: Literal["open", "closed", ""] | None = None
    reference: Text | None = None


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pairs: list[PairIn]
    num_samples: int = Field(0, ge=0)


class RewardRequest(BaseModel):
    """OpenRLHF's request; it may carry more keys (``labels``), which are ignored."""

    model_config = ConfigDict(extra="ignore")
    query: list[Text]
    prompts: list[Text] | None = None


def _too_large(what: str, size: int, limit: int, option: str) -> HTTPException:
    return HTTPException(413, f"{what} is {size}; the limit is {limit} (vrm-serve {option})")


def _check_batch(n: int, limits: ServerLimits) -> None:
    if n > limits.max_batch_size:
        raise _too_large("the batch size", n, limits.max_batch_size, "--max-batch-size")


def _check_text(where: str, chars: int, limits: ServerLimits) -> None:
    if chars > limits.max_text_chars:
        raise _too_large(f"the length of {where} in characters", chars, limits.max_text_chars, "--max-text-chars")


class BodyLimit:
    """ASGI middleware: a 413 for a request body over ``max_bytes``, by its Content-Length before reading, or, for a
    chunked body (no Content-Length) or one longer than it said, as soon as the bytes read pass the limit: the rest is
    never read. A body not complete within ``timeout`` seconds gets a 408 (a client that stops sending)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float = 60.0):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    def _too_large(self, size: str) -> HTTPException:
        return HTTPException(413, f"the request body is {size} bytes; the limit is {self.max_bytes}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            error = self._too_large(length)
            return await JSONResponse({"detail": error.detail}, 413)(scope, receive, send)
        received = 0
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def limited_receive() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), max(deadline - asyncio.get_running_loop().time(), 0))
            except TimeoutError:
                raise HTTPException(408, f"the request body was not complete after {self.timeout:g} s "
                                         "(vrm-serve --body-timeout)") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large(f"over {self.max_bytes}")
            return message

        await self.app(scope, limited_receive, send)


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII characters escaped: a 422 that echoes a lone surrogate of the request can be encoded."""

    def render(self, content: object) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _echo(detail: dict) -> dict:
    """A validation error as JSON can carry it: an echoed input JSON has no word for (NaN, Infinity) as its repr."""
    try:
        json.dumps(detail, allow_nan=False)
    except ValueError:
        return {**detail, "input": repr(detail.get("input"))}
    return detail


async def _validation_error(request: Request, error: RequestValidationError) -> AsciiJSONResponse:
    return AsciiJSONResponse({"detail": [_echo(detail) for detail in jsonable_encoder(error.errors())]}, 422)


def _encode_queries(scorer: RewardScorer | TextScorer, body: RewardRequest, limits: ServerLimits) -> list:
    """The queries of a ``/get_reward`` request checked and tokenised (an HTTPException for the first bad one)."""
    _check_batch(len(body.query), limits)
    if body.prompts is not None and len(body.prompts) != len(body.query):
        raise HTTPException(422, f"'prompts' has {len(body.prompts)} entries but 'query' has {len(body.query)}")
    for i, query in enumerate(body.query):
        _check_text(f"query[{i}]", len(query), limits)
    encoded = []
    for i, query in enumerate(body.query):
        try:
            encoded.append(scorer.encode_query(query, None if body.prompts is None else body.prompts[i]))
        except QuerySplitError as err:
            raise HTTPException(422, f"query[{i}]: {err}") from err
        except ValueError as err:
            raise HTTPException(422, f"query[{i}] cannot be tokenised: {err}") from err
    return encoded


def _encode_pairs(scorer: RewardScorer | TextScorer, body: ScoreRequest, limits: ServerLimits) -> list:
    """The pairs of a ``/score`` request checked and tokenised (an HTTPException for the first bad one)."""
    _check_batch(len(body.pairs), limits)
    if body.num_samples > limits.max_num_samples:
        raise _too_large("num_samples", body.num_samples, limits.max_num_samples, "--max-num-samples")
    try:
        scorer.check_num_samples(body.num_samples)
    except ValueError as err:
        raise HTTPException(422, str(err)) from err
    encoded = []
    for i, pair in enumerate(body.pairs):
        prompt = pair.prompt if isinstance(pair.prompt, str) else [m.model_dump() for m in pair.prompt]
        prompt_chars = len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)
        _check_text(f"pairs[{i}]", prompt_chars + len(pair.response), limits)
        try:
            encoded.append(scorer.encode_pair(prompt, pair.response))
        except ValueError as err:
            raise HTTPException(422, f"pairs[{i}] cannot be tokenised: {err}") from err
    return encoded


def create_app(scorer: RewardScorer | TextScorer, limits: ServerLimits | None = None, model_name: str = "",
               batching: BatchSettings | None = None) -> FastAPI:
    """The FastAPI application serving ``scorer``; ``batching``: how concurrent requests share forward passes."""
    limits = limits or ServerLimits()
    batching = batching or BatchSettings()
    runner = Batcher(scorer, batching) if batching.enabled else SerialScorer(scorer)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        runner.close()

    app = FastAPI(title="vrm reward server", description=__doc__, lifespan=lifespan)
    app.state.runner = runner
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout=limits.body_timeout)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model_name, "head": scorer.name,
                "response_marker": scorer.response_marker, "limits": asdict(limits),
                "batching": {**asdict(batching), "scored": getattr(runner, "counts", None)}}

    @app.post("/get_reward")
    async def get_reward(body: RewardRequest) -> dict:
        encoded = await run_in_threadpool(_encode_queries, scorer, body, limits)
        try:
            details = await runner.score(encoded)
        except ValueError as err:
            raise HTTPException(422, f"the queries cannot be scored: {err}") from err
        return {"rewards": details["reward"]}

    @app.post("/score")
    async def score(body: ScoreRequest) -> dict:
        encoded = await run_in_threadpool(_encode_pairs, scorer, body, limits)
        try:
            details = await runner.score(encoded, body.num_samples,
                                         question_types=[pair.question_type for pair in body.pairs],
                                         references=[pair.reference for pair in body.pairs])
        except ValueError as err:  # e.g. the proxy's closed-ended pair without a reference
            raise HTTPException(422, f"the pairs cannot be scored: {err}") from err
        return {("rewards" if key == "reward" else key): value for key, value in details.items()}

    return app


class HeadTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's head (:attr:`header_timeout` seconds from the
    connection, or from the first byte after the previous response): a connection that holds a half-sent request
    line or headers, or sends nothing, is closed (slowloris). Its body has :class:`BodyLimit`'s deadline."""

    header_timeout = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def _waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self._waiting_for_head() and not self.transport.is_closing():
            self.logger.info("closing a connection whose request head took over %g s", self.header_timeout)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._waiting_for_head() and self._head_timer is None:
            self._arm()
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if not self._waiting_for_head():
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def uvicorn_options(limits: ServerLimits) -> dict[str, Any]:
    """What uvicorn is given besides the app: the h11 protocol with :class:`HeadTimeoutH11`'s head deadline."""
    return {"http": type("VrmH11Protocol", (HeadTimeoutH11,), {"header_timeout": limits.header_timeout})}


def serve(scorer: RewardScorer | TextScorer, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          limits: ServerLimits | None = None, model_name: str = "", log_level: str = "info",
          batching: BatchSettings | None = None) -> None:
    """Serve ``scorer`` until interrupted."""
    import uvicorn

    limits = limits or ServerLimits()
    uvicorn.run(create_app(scorer, limits, model_name=model_name, batching=batching), host=host, port=port,
                log_level=log_level, **uvicorn_options(limits))
