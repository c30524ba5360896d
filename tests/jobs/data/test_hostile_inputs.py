"""Hostile datasets and output dirs, without Ray: text that is not UTF-8, columns that change type,
BOMs, CSV cells that look like numbers, ids that collide, inputs changed under a resume, two jobs
on one output dir. Each test failed before its fix (issue 11)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.jobs.data import fuzz_datasets as fuzz

from jobs.config import load_config
from jobs.data import resume
from jobs.data.columns import scan_columns
from jobs.data.datasource import READ_ERROR, ROW_ID, RowStream, check_readable, count_rows, resolve_paths
from jobs.data.lock import OutputLock
from jobs.data.shards import ShardWriter, prepare_output_dir
from jobs.errors import ConfigError, OutputError
from tests.conftest import QUICKSTART, REPO


def stream(files, **kw):
    return RowStream(files, kw.pop("fmt", None), kw.pop("id_field", None), kw.pop("limit", None), **kw)


def rows_of(files, **kw):
    return [r for t in stream(files, **kw).tables() for r in t.to_pylist()]


def write_shards(out, tables, shard_rows):
    (out / "scores").mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(out, shard_rows=shard_rows)
    for t in tables:
        writer.add(t)
    writer.close()
    return sorted((out / "scores").glob("part-*.parquet"))


# -- 1. text that cannot be encoded as UTF-8 ------------------------------------------------------
def test_text_that_is_not_utf8_is_a_row_with_its_error_and_the_rest_goes_on(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b'{"q": "fine"}\n{"q": "lone \\ud800 surrogate"}\n{"q": "bad byte \xff here"}\n'
                      b'{"\\udc80key": 1, "q": "x"}\n{"q": "after"}\n')
    array = tmp_path / "b.json"
    array.write_bytes(b'[{"q": "fine"}, {"q": "\\udfff"}, {"q": "bad \xc3\x28"}]')
    table = tmp_path / "c.csv"
    table.write_bytes(b"q,n\nfine,1\nbad \xe2\x82,2\nafter,3\n")
    files = [jsonl, array, table]
    rows = rows_of(files)
    assert len(rows) == count_rows(files, None) == 11
    errors = [r[READ_ERROR] for r in rows]
    assert [e is None for e in errors] == [True, False, False, False, True, True, False, False, True, False, True]
    assert "a.jsonl line 2: 'q' is not valid UTF-8 text" in errors[1] and "\\ud800" in errors[1]
    assert "a.jsonl line 4: a column name is not valid UTF-8" in errors[3]
    assert "c.csv line 3: 'q'" in errors[9]
    assert rows[1]["q"] == "lone \\ud800 surrogate"  # kept, with the bad character written as an escape
    assert len({r[ROW_ID] for r in rows}) == 11
    # ... and they reach Parquet like any other row.
    (path,) = write_shards(tmp_path / "out", stream(files).tables(), shard_rows=100)
    assert pq.read_table(path).num_rows == 11


def test_lines_that_crash_the_json_parser_are_unreadable_rows(tmp_path):
    # A 5000-digit integer raised a ValueError without `.msg`, 3000 brackets a RecursionError:
    # each stopped the job. A lone \r is no line break in JSON Lines (it made two rows of one).
    path = tmp_path / "odd.jsonl"
    path.write_text('{"q": 1}\n' + "1" * 5000 + "\n" + "[" * 3000 + '\n{"q": 2}\rtail\n')
    rows = rows_of([path])
    assert len(rows) == count_rows([path], None) == 4
    assert [r[READ_ERROR] is None for r in rows] == [True, False, False, False]
    assert "4300 digits" in rows[1][READ_ERROR] and "nested too deeply" in rows[2][READ_ERROR]


# -- 2. a column whose type changes after a few hundred rows --------------------------------------
def test_a_column_that_changes_type_late_gets_one_type_in_every_shard(tmp_path):
    path = tmp_path / "drift.jsonl"
    with open(path, "w") as f:
        for i in range(700):
            f.write(json.dumps({
                "int_then_text": i if i < 300 else f"t{i}",
                "null_then_text": None if i < 500 else "late",
                "scalar_then_list": 1.5 if i < 400 else [1, 2],
                "dict_then_text": {"k": i} if i < 300 else "flat",
                "int_then_float": i if i < 600 else i + 0.5,
                "q": f"row {i}",
            }) + "\n")
    shards = write_shards(tmp_path / "out", stream([path]).tables(), shard_rows=100)
    assert len(shards) == 7
    schemas = {pq.read_schema(s) for s in shards}
    assert len(schemas) == 1, schemas
    (schema,) = schemas
    assert schema.field("int_then_text").type == pa.string() and schema.field("null_then_text").type == pa.string()
    assert schema.field("int_then_float").type == pa.float64() and schema.field("q").type == pa.string()
    got = pads.dataset([str(s) for s in shards], format="parquet").to_table().to_pylist()  # readable together
    assert len(got) == 700
    assert got[0]["int_then_text"] == "0" and got[699]["int_then_text"] == "t699"
    assert json.loads(got[0]["dict_then_text"]) == {"k": 0} and got[699]["dict_then_text"] == "flat"
    assert json.loads(got[699]["scalar_then_list"]) == [1, 2] and got[0]["scalar_then_list"] == "1.5"
    assert got[599]["int_then_float"] == 599.0 and got[699]["int_then_float"] == 699.5


def test_flags_beside_numbers_stay_flags(write_jsonl):
    # pyarrow alone reads [0.5, True] as [0.5, 1.0]; found by the fuzz campaign.
    rows = rows_of([write_jsonl([{"f": 0.5}, {"f": True}, {"g": [1.5, False]}])])
    assert [r["f"] for r in rows] == ["0.5", "true", None] and rows[2]["g"] == "[1.5, false]"


def test_files_of_one_dataset_whose_types_differ_share_a_schema(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"q": ["a"] * 300, "n": list(range(300))}), data / "1.parquet")
    pq.write_table(pa.table({"q": ["c"] * 300, "n": ["three"] * 300}), data / "2.parquet")
    (data / "3.jsonl").write_text(json.dumps({"q": "d", "n": None, "extra": [1]}) + "\n")
    files = resolve_paths(str(data))
    tables = list(stream(files).tables())
    assert len({t.schema for t in tables}) == 1
    values = [r["n"] for t in tables for r in t.to_pylist()]
    assert values[:2] == ["0", "1"] and values[300:] == ["three"] * 300 + [None]


def test_input_columns_named_like_internal_ones_are_kept_aside(write_jsonl):
    from jobs.runtime.pipeline import RESULT_COLUMNS, prompt_columns
    import functools

    cfg = load_config(QUICKSTART, ["dataset.rubric=Is it right?"])
    annotate = functools.partial(prompt_columns, dataset=cfg.dataset, mode="absolute")
    rec = {"instruction": "q", "response": "r", "_prompt": "mine", "score": 1, "input_score": 2}
    (row,) = rows_of([write_jsonl([rec])], reserved=RESULT_COLUMNS, annotate=annotate)
    assert row["input__prompt"] == "mine" and row["_prompt"].startswith("###Task Description")
    assert row["input_score"] == 2 and row["input_input_score"] == 1


# -- 3. BOMs, and CSV cells that look like numbers or nulls ---------------------------------------
def test_boms_are_dropped_and_csv_cells_stay_the_text_they_are(tmp_path):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "a.jsonl").write_bytes(bom + b'{"id": "a1", "q": 1}\n')
    (tmp_path / "b.json").write_bytes(bom + b'[{"id": "b1", "q": 2}]')
    (tmp_path / "c.csv").write_bytes(bom + b'id,q,n\n007,NA,1e3\n009,null,""\n010,,-0\n')
    files = resolve_paths(str(tmp_path / "*"))
    assert check_readable(files, None) == {"id": "a1", "q": 1}
    rows = rows_of(files, id_field="id")
    assert [r[READ_ERROR] for r in rows] == [None] * 5
    assert [r[ROW_ID] for r in rows] == ["a1", "b1", "007", "009", "010"]  # a user's id "007" stays "007"
    assert [(r["id"], r["q"], r["n"]) for r in rows[2:]] == [("007", "NA", "1e3"), ("009", "null", ""),
                                                              ("010", "", "-0")]
    assert "id" in scan_columns([tmp_path / "c.csv"], None).types  # the header's first name has no BOM


def test_csv_ids_match_json_ids_for_plain_numbers_but_not_for_text_that_looks_like_one(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"q": "x", "n": 1}, {"q": "y", "n": "007"}]))
    (tmp_path / "a.csv").write_text("q,n\nx,1\ny,007\n")
    from_json = [r[ROW_ID] for r in rows_of([tmp_path / "a.json"])]
    from_csv = rows_of([tmp_path / "a.csv"])
    assert [r[ROW_ID] for r in from_csv] == from_json
    assert [r["n"] for r in from_csv] == ["1", "007"]


# -- 4. ids that collide ---------------------------------------------------------------------------
def test_ids_are_unique_and_a_resume_keeps_every_row(write_jsonl, tmp_path):
    recs = [{"id": "x", "q": 1}, {"id": "x", "q": 2}, {"id": "x-2", "q": 3}, {"id": 5, "q": 4}, {"id": "5", "q": 5},
            {"q": 6}, {"id": "unreadable-7", "q": 7}, "{broken", {"id": "x-2", "q": 9}]
    path = write_jsonl(recs)
    rows = rows_of([path], id_field="id")
    ids = [r[ROW_ID] for r in rows]
    assert len(ids) == len(set(ids)) == 9, ids
    assert ids[:3] == ["x", "x-2", "x-2-2"]  # the third row's own id was taken by the second's suffix
    assert rows[2][READ_ERROR] is None and "duplicate id 'x'" in rows[1][READ_ERROR]
    assert "duplicate id '5'" in rows[4][READ_ERROR] and "duplicate id 'x-2'" in rows[8][READ_ERROR]
    # A run stopped after its first shard, then resumed: every row once.
    first = rows[:4]
    rest = rows_of([path], id_field="id", skip=frozenset(r[ROW_ID] for r in first))
    assert sorted(r[ROW_ID] for r in first + rest) == sorted(ids)
    # Identical rows without id_field: content hash, then -2, -3; a resume keeps them all as well.
    same = write_jsonl([{"q": "same"}] * 3 + [{"q": "other"}, {"q": "same"}], name="same.jsonl")
    ids = [r[ROW_ID] for r in rows_of([same])]
    assert len(set(ids)) == 5 and ids[1:3] == [ids[0] + "-2", ids[0] + "-3"] and ids[4] == ids[0] + "-4"
    rest = rows_of([same], skip=frozenset(ids[:2]))
    assert [r[ROW_ID] for r in rest] == ids[2:]


# -- 5. the dataset changes under a resume --------------------------------------------------------
def prepare_after_a_shard(tmp_path, path, out, fmt=None):
    cfg = load_config(QUICKSTART, [f"dataset.path={path}", f"output.dir={out}", "judge.url=http://127.0.0.1:9/v1"]
                      + ([f"dataset.format={fmt}"] if fmt else []))
    files = resolve_paths(str(path))
    columns = scan_columns(files, cfg.dataset.format)
    resume.prepare(prepare_output_dir(str(out)), cfg, False, files, columns)
    write_shards(out, stream(files, columns=columns).tables(), shard_rows=100)
    return cfg


def test_a_changed_dataset_is_refused_on_resume_and_appended_lines_are_not(write_jsonl, tmp_path):
    path, out = write_jsonl([{"q": i} for i in range(5)]), tmp_path / "out"
    cfg = prepare_after_a_shard(tmp_path, path, out)
    job = json.loads((out / "job.json").read_text())
    (entry,) = job["inputs"]
    assert entry["size"] == path.stat().st_size and len(entry["sha256"]) == 64

    def again():
        files = resolve_paths(str(path))
        return resume.prepare(out, cfg, False, files, scan_columns(files, None))

    assert again().rows == 5  # unchanged
    with open(path, "a") as f:
        f.write(json.dumps({"q": 5}) + "\n")
    assert again().rows == 5  # lines appended: the new row is scored by the re-run
    path.write_text(path.read_text().replace('{"q": 2}', '{"q": 7}'))  # an edit in place, same size
    with pytest.raises(ConfigError, match=rf"dataset file '{path}' changed .* since output.dir .*--restart"):
        again()
    assert resume.prepare(out, cfg, True, resolve_paths(str(path)), None).rows == 0  # --restart starts over


def test_a_json_array_that_grew_and_a_line_glued_to_the_last_one_are_changes(tmp_path):
    array, out = tmp_path / "d.json", tmp_path / "out"
    array.write_text(json.dumps([{"q": 1}]))
    cfg = prepare_after_a_shard(tmp_path, array, out)
    array.write_text(json.dumps([{"q": 1}, {"q": 2}]))
    with pytest.raises(ConfigError, match="changed"):
        resume.prepare(out, cfg, False, [array], scan_columns([array], None))

    lines, out2 = tmp_path / "e.jsonl", tmp_path / "out2"
    lines.write_text('{"q": 1}')  # no line break at the end: an append would change this row
    cfg = prepare_after_a_shard(tmp_path, lines, out2)
    lines.write_text('{"q": 1}{"q": 2}\n')
    with pytest.raises(ConfigError, match="changed"):
        resume.prepare(out2, cfg, False, [lines], scan_columns([lines], None))


def test_shards_typed_otherwise_than_the_input_now_are_refused(write_jsonl, tmp_path):
    path, out = write_jsonl([{"q": i} for i in range(3)]), tmp_path / "out"
    cfg = prepare_after_a_shard(tmp_path, path, out)
    with open(path, "a") as f:
        f.write(json.dumps({"q": "text now"}) + "\n")  # appended, but it makes q a text column
    with pytest.raises(ConfigError, match=r"input columns read now differ .*q: int64 -> string.*--restart"):
        resume.prepare(out, cfg, False, [path], scan_columns([path], None))


# -- 6. two jobs on one output dir ------------------------------------------------------------------
def test_a_second_job_on_an_output_dir_is_refused_naming_the_first(tmp_path):
    with OutputLock.acquire(tmp_path):
        with pytest.raises(OutputError, match=rf"output.dir '{tmp_path}' is in use by another judgefleet job "
                                              rf"\(pid {os.getpid()}\)"):
            OutputLock.acquire(tmp_path)
    OutputLock.acquire(tmp_path).release()  # released with the job


def test_a_lock_left_by_a_killed_job_does_not_block_the_next(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from jobs.data.lock import OutputLock; "
        f"OutputLock.acquire(Path({str(tmp_path)!r})); print('held', flush=True); time.sleep(600)")],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            OutputLock.acquire(tmp_path)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
    finally:
        if holder.poll() is None:
            holder.kill()
    deadline = time.monotonic() + 5
    lock = None
    while lock is None:
        try:
            lock = OutputLock.acquire(tmp_path)
        except OutputError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    lock.release()


# -- 7. the reader under fuzzed datasets (the end-to-end campaign is tests/jobs/commands/test_dataset_fuzz.py) --
@settings(max_examples=50, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(plan=fuzz.plans())
def test_fuzzed_datasets_read_back_whole(plan):
    from jobs.runtime.pipeline import RESULT_COLUMNS

    with tempfile.TemporaryDirectory() as tmp:
        exp = fuzz.write(plan, Path(tmp))
        files = resolve_paths(str(exp.path))
        s = stream(files, id_field=exp.id_field, reserved=RESULT_COLUMNS)
        tables = list(s.tables())
        assert len({t.schema for t in tables}) <= 1, plan.describe()
        rows = [r for t in tables for r in t.to_pylist()]
        assert count_rows(files, None) == len(exp.records), plan.describe()
        problems = fuzz.check_rows(exp, rows, RESULT_COLUMNS, judged=False)
        assert not problems, f"{plan.describe()}\n" + "\n".join(problems)
