"""Reading datasets: every input row comes out once, with a stable row_id, or with its read error."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.data.datasource import READ_ERROR, ROW_ID, ROW_INDEX, RowStream, check_readable, count_rows, resolve_paths
from jobs.errors import DatasetError


def rows_of(files, **kw):
    stream = RowStream(files, kw.pop("fmt", None), kw.pop("id_field", None), kw.pop("limit", None), **kw)
    return [r for t in stream.tables() for r in t.to_pylist()]


def test_row_ids_are_content_hashes_that_survive_reordering(write_jsonl):
    a, b, c = {"q": "a"}, {"q": "b"}, {"q": "c"}
    first = {r["q"]: r[ROW_ID] for r in rows_of([write_jsonl([a, b, c], "one.jsonl")])}
    second = {r["q"]: r[ROW_ID] for r in rows_of([write_jsonl([c, {"q": "new"}, a, b], "two.jsonl")])}
    assert first == {k: second[k] for k in first}
    assert len(set(first.values())) == 3


def test_duplicates_get_distinct_ids_and_positions(write_jsonl):
    rows = rows_of([write_jsonl([{"q": "same"}, {"q": "other"}, {"q": "same"}, {"q": "same"}])])
    ids = [r[ROW_ID] for r in rows]
    assert len(set(ids)) == 4
    assert ids[2] == ids[0] + "-2" and ids[3] == ids[0] + "-3"
    assert [r[ROW_INDEX] for r in rows] == [0, 1, 2, 3]


def test_id_field_is_used_and_duplicate_ids_are_flagged(write_jsonl):
    rows = rows_of([write_jsonl([{"id": "x1", "q": 1}, {"id": "x2", "q": 2}, {"id": "x1", "q": 3}, {"q": 4}])], id_field="id")
    assert [r[ROW_ID] for r in rows][:3] == ["x1", "x2", "x1-2"]
    assert rows[0][READ_ERROR] is None
    assert "duplicate id 'x1'" in rows[2][READ_ERROR]
    assert "id field 'id' is missing" in rows[3][READ_ERROR]


def test_bad_jsonl_lines_become_rows_with_errors(write_jsonl):
    path = write_jsonl([{"q": "ok"}, "{not json", "[1, 2]", {"q": "fine"}, '{"q": "trunc'])
    rows = rows_of([path])
    assert len(rows) == 5
    errors = [r[READ_ERROR] for r in rows]
    assert errors[0] is None and errors[3] is None
    assert "line 2: not valid JSON" in errors[1]
    assert "line 3: expected a JSON object" in errors[2]
    assert "line 5: not valid JSON" in errors[4]


def test_limit_and_formats_agree(tmp_path):
    records = [{"q": f"question {i}", "n": i} for i in range(7)]
    (tmp_path / "d.json").write_text(json.dumps(records))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "d.parquet")
    (tmp_path / "d.csv").write_text("q,n\n" + "".join(f"question {i},{i}\n" for i in range(7)))
    ids = None
    for name in ("d.json", "d.parquet", "d.csv"):
        files = resolve_paths(str(tmp_path / name))
        assert count_rows(files, None) == 7
        rows = rows_of(files, limit=5)
        assert [r["q"] for r in rows] == [f"question {i}" for i in range(5)]
        if ids is None:
            ids = [r[ROW_ID] for r in rows]
        assert [r[ROW_ID] for r in rows] == ids  # same content, same ids, whatever the format


def test_output_column_names_in_the_input_are_kept_aside(write_jsonl):
    rows = rows_of([write_jsonl([{"q": "a", "score": 5, "row_id": "mine"}])], reserved=("score",))
    assert rows[0]["input_score"] == 5 and rows[0]["input_row_id"] == "mine"
    assert rows[0][ROW_ID] != "mine"


def test_mixed_types_in_a_column_are_kept_as_json_text(write_jsonl):
    rows = rows_of([write_jsonl([{"rubric": "text rubric"}, {"rubric": {"criteria": "c"}}])])
    assert rows[0]["rubric"] == "text rubric"
    assert json.loads(rows[1]["rubric"]) == {"criteria": "c"}


def test_truncated_json_and_missing_paths_fail_before_work(tmp_path):
    bad = tmp_path / "cut.json"
    bad.write_text('[{"q": "a"}, {"q": "b"')
    with pytest.raises(DatasetError, match="truncated"):
        check_readable(resolve_paths(str(bad)), None)
    with pytest.raises(DatasetError, match="matches no file"):
        resolve_paths(str(tmp_path / "absent.jsonl"))
    odd = tmp_path / "data.txt"
    odd.write_text("x")
    with pytest.raises(DatasetError, match="set dataset.format"):
        resolve_paths(str(odd))
