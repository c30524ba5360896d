"""The wire contract: what judgefleet's route adds to the OpenAI API, named once for both sides.

The route (`serve/`) writes these and the jobs (`jobs/`) read them; no other module spells a
header, a field or a path of them. Everything else on the wire is plain OpenAI.

- Answers of /v1/completions and /v1/chat/completions carry `judgefleet`: the `Lineage` of the
  answer (backend, member, replica, node, model file and its sha256). The same lineage goes into
  `x-judgefleet-*` response headers for clients that drop unknown fields.
- A request may name a pool member: `x-judgefleet-member` pins it (only that member answers),
  `x-judgefleet-prefer-member` prefers it (it answers when it has room, e.g. because it holds
  the row's feedback in its cache; others take the request otherwise).
- `GET /v1/models/{id}` cards carry `max_model_len` (vLLM's name for the context) and
  `judgefleet` (the first member's lineage, plus every member's under `members`).
- `GET /pools`: each pool's members and their routing state (`MemberState`).
- `POST /tokenize` {model, prompt}: {count, max_model_len, tokens} (vLLM's shape).
- `GET /health` (readiness): 200 {status: "ok", models} once every pool has a member that can
  answer, else 503 {status: "unavailable", models, waiting: [model ids]}; no API key needed.
- `GET /live` (liveness): 200 {status: "ok"} while the route's process answers at all.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple

LINEAGE_FIELD = "judgefleet"
PIN_MEMBER_HEADER = "x-judgefleet-member"
PREFER_MEMBER_HEADER = "x-judgefleet-prefer-member"
_LINEAGE_HEADER_PREFIX = "x-judgefleet-"

HEALTH_PATH = "/health"
LIVE_PATH = "/live"
POOLS_PATH = "/pools"
TOKENIZE_PATH = "/tokenize"
MODELS_PATH = "/v1/models"
# Request paths -> the method name a pool member answers them with.
POST_METHODS = {"/v1/completions": "completions", "/v1/chat/completions": "chat", TOKENIZE_PATH: "tokenize"}


def health_json(models: List[str]) -> dict:
    """GET /health: the route is up, and the model ids it serves."""
    return {"status": "ok", "models": sorted(models)}


def unready_json(models: List[str], waiting: List[str]) -> dict:
    """GET /health while some pool has no member that can answer yet (503)."""
    return {"status": "unavailable", "models": sorted(models), "waiting": sorted(waiting)}


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date); None if absent or bad.
    Callers cap it: a server may ask for anything."""
    if not value:
        return None
    try:
        seconds = float(value)
        return max(0.0, seconds) if seconds == seconds else None  # NaN is no answer
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class Lineage:
    """Who answered: every answer of the route names it, and every scored row keeps it."""

    backend: str
    model: str
    member: str
    model_file: Optional[str] = None
    model_sha256: Optional[str] = None
    replica: Optional[str] = None
    node: Optional[str] = None
    # The base URL of an external OpenAI server (engine `openai`).
    upstream: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None or k != "upstream"}

    def headers(self) -> Dict[str, str]:
        """The lineage as response headers (x-judgefleet-backend, x-judgefleet-model-file, ...)."""
        return {
            _LINEAGE_HEADER_PREFIX + k.replace("_", "-"): str(v)
            for k, v in asdict(self).items()
            if v and k not in ("model", "upstream")
        }

    @classmethod
    def from_json(cls, value: Any) -> Optional["Lineage"]:
        """The lineage of an answer's `judgefleet` field; None when absent or malformed."""
        if not isinstance(value, Mapping) or not all(isinstance(value.get(k), str) for k in ("backend", "model", "member")):
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: (None if v is None else str(v)) for k, v in value.items() if k in known})


def lineage_of(answer: Any) -> Optional[Lineage]:
    """Who answered, when the answer came from judgefleet's route; None from any other server."""
    return Lineage.from_json(answer.get(LINEAGE_FIELD)) if isinstance(answer, Mapping) else None


def with_lineage(answer: dict, lineage: Lineage) -> dict:
    answer[LINEAGE_FIELD] = lineage.to_json()
    return answer


def prefer_member(member: str) -> Dict[str, str]:
    """Request headers asking the route to send this request to `member` when it has room."""
    return {PREFER_MEMBER_HEADER: member}


def pin_member(member: str) -> Dict[str, str]:
    """Request headers asking the route to send this request to `member` only."""
    return {PIN_MEMBER_HEADER: member}


def requested_members(headers: Mapping[str, str]) -> Tuple[Optional[str], Optional[str]]:
    """(pinned, preferred) member names a request asks for."""
    return headers.get(PIN_MEMBER_HEADER) or None, headers.get(PREFER_MEMBER_HEADER) or None


def auth_headers(api_key: Optional[str]) -> Dict[str, str]:
    """Request headers carrying an API key the OpenAI way (what the route checks); none without a key."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


# -- errors -------------------------------------------------------------------------------------
# The OpenAI (and vLLM) error code of a prompt that does not fit the model's context.
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


def _error_field(text: str) -> Any:
    try:
        return json.loads(text).get("error")
    except (ValueError, AttributeError):
        return None


def error_message(text: str, reason: str = "") -> str:
    """The message of an OpenAI-shaped error body, else the start of the body, else the reason phrase."""
    err = _error_field(text)
    if isinstance(err, Mapping) and err.get("message"):
        return str(err["message"])
    if isinstance(err, str):
        return err
    return text[:300] or reason


def error_code(text: str) -> Optional[str]:
    """The `code` of an OpenAI-shaped error body (e.g. CONTEXT_LENGTH_EXCEEDED), if it has one."""
    err = _error_field(text)
    code = err.get("code") if isinstance(err, Mapping) else None
    return code if isinstance(code, str) else None


# -- model cards --------------------------------------------------------------------------------
def model_card(model_id: str, context_length: int, lineage: Optional[Lineage], engine: str) -> dict:
    """A member's /v1/models entry."""
    card = {"id": model_id, "object": "model", "owned_by": "judgefleet", "max_model_len": context_length}
    if lineage is not None:
        card[LINEAGE_FIELD] = dict(lineage.to_json(), engine=engine)
    return card


def pool_card(model_id: str, member_cards: List[dict]) -> dict:
    """A pool's /v1/models entry: the first member's card, the smallest context of all members,
    and every member's lineage under `judgefleet.members`."""
    if not member_cards:  # none answered yet (starting, busy): still the route's card, without lineage
        return {"id": model_id, "object": "model", "owned_by": "judgefleet", LINEAGE_FIELD: {"members": []}}
    card = dict(member_cards[0])
    card["max_model_len"] = min(c["max_model_len"] for c in member_cards)
    card[LINEAGE_FIELD] = dict(member_cards[0].get(LINEAGE_FIELD) or {},
                               members=[c.get(LINEAGE_FIELD) for c in member_cards])
    return card


def max_model_len(card: Any) -> Optional[int]:
    """The context length a model card states, if it states one."""
    value = card.get("max_model_len") if isinstance(card, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def is_route_card(card: Any) -> bool:
    """Whether a model card comes from judgefleet's route (it then speaks this whole contract)."""
    return isinstance(card, Mapping) and isinstance(card.get(LINEAGE_FIELD), Mapping)


# -- GET /pools ---------------------------------------------------------------------------------
@dataclass
class MemberState:
    """One member's routing state, as GET /pools reports it."""

    name: str
    engine: str
    replicas: int
    capacity: int
    outstanding: int
    down: bool
    served: int
    failed: int
    # Engine statistics from one of its replicas; None while it is busy or starting.
    engine_stats: Optional[dict] = None
    # Scaled to zero (autoscaling min_replicas 0): no replica now, but a request starts one.
    cold: bool = False

    @property
    def up(self) -> bool:
        return not self.down


def pools_json(pools: Mapping[str, List[MemberState]]) -> dict:
    return {model_id: [asdict(m) for m in members] for model_id, members in pools.items()}


def parse_pools(payload: Any) -> Dict[str, List[MemberState]]:
    """GET /pools as typed states; ValueError when the payload is not that shape."""
    if not isinstance(payload, Mapping):
        raise ValueError("GET /pools did not answer a JSON object")
    known = {f.name for f in fields(MemberState)}
    try:
        return {
            str(model_id): [MemberState(**{k: v for k, v in m.items() if k in known}) for m in members]
            for model_id, members in payload.items()
        }
    except (TypeError, AttributeError) as e:
        raise ValueError(f"GET /pools answered an unexpected shape: {e}") from None


def every_pool_up(pools: Mapping[str, List[MemberState]]) -> bool:
    """At least one pool, and a member up in each: the route can answer every model it serves."""
    return bool(pools) and all(any(m.up for m in members) for members in pools.values())
