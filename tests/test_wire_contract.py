"""The wire contract (`serve.wire`) holds on both sides: the route writes what the jobs read.

Two halves: no module of `serve/` or `jobs/` spells a piece of the contract itself (so neither
side can change it alone), and what the router answers reads back through wire's own helpers.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from pathlib import Path
from typing import Iterator, List, Tuple

from serve import wire
from tests.serve.fakes import MODEL, FakeMember, body, member, router

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / "serve" / "wire.py"
# A path-like string (no spaces) that is, or ends in, one of the route's own paths.
_ROUTE_PATH = re.compile(r"^\S*(/pools|/tokenize)$")
_FIELD = wire.LINEAGE_FIELD
# Keys that make a dict literal an OpenAI body or card, where the lineage field would go.
_OPENAI_KEYS = {"id", "object", "model", "choices", "usage", "owned_by"}


def _docstrings(tree: ast.AST) -> set:
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, nodes) and n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}


def _is_field(node: ast.Constant, parent: ast.AST) -> bool:
    """Whether the string `judgefleet` is used as the answer/card field: answer["judgefleet"],
    answer.get("judgefleet"), "judgefleet" in answer, or a key of an OpenAI-shaped dict literal."""
    if isinstance(parent, ast.Subscript) and parent.slice is node:
        return True
    if isinstance(parent, ast.Call) and parent.args and parent.args[0] is node:
        return isinstance(parent.func, ast.Attribute) and parent.func.attr in ("get", "pop", "setdefault")
    if isinstance(parent, ast.Compare) and parent.left is node:
        return any(isinstance(op, (ast.In, ast.NotIn)) for op in parent.ops)
    if isinstance(parent, ast.Dict) and node in parent.keys:
        keys = {k.value for k in parent.keys if isinstance(k, ast.Constant)}
        return bool(keys & _OPENAI_KEYS)
    return False


def wire_literals(path: Path) -> Iterator[Tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = _docstrings(tree)
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == _FIELD:
            yield node.value.lineno, f"{_FIELD}=..."
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docstrings:
            continue
        text = node.value
        if "x-judgefleet" in text.lower() or _ROUTE_PATH.match(text.strip()):
            yield node.lineno, repr(text)
        elif text == _FIELD and _is_field(node, parents.get(id(node))):
            yield node.lineno, repr(text) + " as a field"


def test_no_wire_literal_outside_the_contract_module():
    found: List[str] = []
    for folder in ("serve", "jobs"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == CONTRACT:
                continue
            found += [f"{path.relative_to(REPO)}:{line}: {what}" for line, what in wire_literals(path)]
    assert not found, "use serve.wire's names instead of:\n" + "\n".join(found)


def test_the_scan_finds_what_it_is_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Docs may say x-judgefleet-member and /pools."""\n'
        'a = answer["judgefleet"]\n'
        'b = answer.get("judgefleet")\n'
        'c = {"id": 1, "judgefleet": b}\n'
        'd = {"x-judgefleet-prefer-member": "m"}\n'
        'e = url + "/pools"\n'
        'f = {"/tokenize": "tokenize"}\n'
        'g = dict(card, judgefleet=b)\n'
        'h = {"article": 1, "judgefleet": 2}  # a name, not the field\n'
        'i = "GET /pools answered nothing"  # prose\n'
        'j = "judgefleet" in answer\n'
    )
    assert [line for line, _ in wire_literals(sample)] == [2, 3, 4, 5, 6, 7, 8, 11]


# -- the route's answers, read back with wire's helpers ------------------------------------------
def _get(route, path: str):
    reply = asyncio.run(route.handle("GET", path, {}, b""))
    assert reply.status == 200
    return json.loads(reply.payload())


def _post(route, headers=None):
    reply = asyncio.run(route.handle("POST", "/v1/completions", headers or {}, body()))
    assert reply.status == 200
    return reply, json.loads(reply.payload())


def test_an_answer_names_its_member_by_wire_lineage_in_body_and_headers():
    fake = FakeMember("cpu-0")
    reply, answer = _post(router(member(fake)))
    assert wire.lineage_of(answer) == fake.lineage
    assert reply.headers == fake.lineage.headers()
    assert wire.lineage_of({"id": "x", "choices": []}) is None  # any other OpenAI server


def test_a_request_goes_to_the_member_wire_says_to_prefer_or_pin():
    fakes = [FakeMember("gpu-0"), FakeMember("cpu-0")]
    route = router(*(member(f) for f in fakes))
    for name in ("gpu-0", "cpu-0"):
        for headers in (wire.prefer_member(name), wire.pin_member(name)):
            assert wire.lineage_of(_post(route, headers)[1]).member == name
            assert wire.requested_members(headers) in ((None, name), (name, None))


def test_pools_and_cards_read_back_with_wire():
    fakes = [FakeMember("gpu-0", context_length=8192), FakeMember("cpu-0", context_length=2048)]
    route = router(*(member(f) for f in fakes))
    pools = wire.parse_pools(_get(route, wire.POOLS_PATH))
    assert list(pools) == [MODEL] and [m.name for m in pools[MODEL]] == ["gpu-0", "cpu-0"]
    assert all(m.engine == "fake" and m.up and m.engine_stats == {"in_flight": 0} for m in pools[MODEL])
    assert wire.every_pool_up(pools)
    card = _get(route, f"{wire.MODELS_PATH}/{MODEL}")
    assert wire.is_route_card(card) and wire.max_model_len(card) == 2048
    members = [wire.Lineage.from_json(m) for m in card[wire.LINEAGE_FIELD]["members"]]
    assert members == [f.lineage for f in fakes]
    assert _get(route, wire.HEALTH_PATH) == wire.health_json([MODEL])


def test_a_route_whose_members_have_not_answered_still_says_it_is_the_route():
    """The card is how a client tells judgefleet's route from another server: it must say so while
    every member is still starting, or a job would fall back to one verdict request per sample."""
    card = wire.pool_card("starting-judge", [])
    assert wire.is_route_card(card) and wire.max_model_len(card) is None
    assert not wire.is_route_card({"id": "x", "object": "model", "owned_by": "vllm", "max_model_len": 4096})
