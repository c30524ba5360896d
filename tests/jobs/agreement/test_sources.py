"""Reading SOURCEs: reference cells, row ids computed as `score` computes them, the join, and
rows without a score counted and left out of a comparison."""

import json

import numpy as np
import pytest

from jobs.agreement.compare import compare_pair
from jobs.agreement.sources import REFERENCE, REFERENCE_RUN, load, parse_reference
from jobs.data.datasource import RowStream, content_hash
from jobs.errors import ConfigError, DatasetError
from tests.jobs.agreement.scoredirs import gold_mean, records, write_data, write_score_dir


@pytest.mark.parametrize("cell, runs", [
    (4, [4.0]), (4.5, [4.5]), ("3", [3.0]), ([5, 4, 5], [5.0, 4.0, 5.0]), ("[5, 5, 5]", [5.0, 5.0, 5.0]),
    ("(2, 3)", [2.0, 3.0]), ([5, None], [5.0, None]), ("[5, \"x\"]", [5.0, None]),
    (None, None), ("", None), ("n/a", None), (float("nan"), None), ([None], None), (True, None), ({"a": 1}, None),
])
def test_reference_cells(cell, runs):
    assert parse_reference(cell) == runs


def test_a_data_file_joins_with_score_dirs_and_unscored_rows_are_counted(tmp_path):
    recs = records()
    data = write_data(tmp_path / "data.jsonl", recs)
    samples = [[3, 4, 4] for _ in recs]
    samples[0] = [None, None, None]  # a row the judge never scored
    samples[1] = [5, None, 4]  # a sample failed: the row's score is the mean of the others
    judge = write_score_dir(tmp_path / "judge", recs, samples)

    joined = load([str(judge), f"ref={data}"], refs=["gold"], group="idx")
    # The data file's row ids are RowStream's, as `judgefleet score` computes them: the content hash.
    stream_ids = [r for t in RowStream([data], None, None, None).tables() for r in t.column("row_id").to_pylist()]
    assert stream_ids == [content_hash(r) for r in recs] == joined.row_ids
    assert [s.name for s in joined.sources] == ["judge", "gold", "gold[1]", "gold[2]"]
    assert [s.kind for s in joined.sources[1:]] == [REFERENCE, REFERENCE_RUN, REFERENCE_RUN]
    assert joined.source("judge").judge_model == "judge-x"
    assert joined.scores["judge"][1] == 4.5 and np.isnan(joined.scores["judge"][0])
    expected_gold = [gold_mean(r) for r in recs]
    assert [None if np.isnan(v) else v for v in joined.scores["gold"]] == expected_gold
    assert joined.source("gold").unreadable == 1  # "n/a"; the null is simply missing
    assert len(set(joined.groups)) == 8
    assert joined.samples["judge"].shape == (24, 3) and joined.samples["gold"].shape == (24, 2)

    pair = compare_pair(joined, "judge", "gold", resamples=30, seed=0)
    assert pair["n"] == 21 and pair["rows_missing"] == 3
    assert pair["rows_missing_by_source"] == {"judge": 1, "gold": 2}
    keep = [i for i in range(24) if i not in (0, 5, 6)]
    offset = np.mean([joined.scores["judge"][i] - expected_gold[i] for i in keep])
    assert pair["statistics"]["mean_offset"]["estimate"] == pytest.approx(offset)
    assert sum(map(sum, pair["confusion"]["matrix"])) == 21


def test_the_id_field_of_the_score_dirs_is_used_for_data_files(tmp_path):
    recs = [{**r, "key": f"k{i}"} for i, r in enumerate(records())]
    data = write_data(tmp_path / "data.jsonl", recs)
    judge = write_score_dir(tmp_path / "judge", recs, [[3]] * len(recs), id_field="key")
    joined = load([str(judge), str(data)], refs=["gold"])  # id_field read from the dir's job.json
    assert joined.row_ids == [f"k{i}" for i in range(len(recs))]
    with pytest.raises(ConfigError, match="scored with dataset.id_field=key.*pass --id-field key"):
        load([str(judge), str(data)], refs=["gold"], id_field="idx")


def test_names_kinds_and_refusals(tmp_path):
    recs = records()
    a = write_score_dir(tmp_path / "a", recs, [[3]] * len(recs))
    joined = load([f"first={a}", f"second={a}"])
    assert [s.name for s in joined.sources] == ["first", "second"]
    with pytest.raises(ConfigError, match="two sources are named 'a'"):
        load([str(a), str(a)])
    relative = write_score_dir(tmp_path / "rel", recs, [[3]] * len(recs))
    shard = next((relative / "scores").glob("*.parquet"))
    import pyarrow.parquet as pq

    table = pq.read_table(shard)
    pq.write_table(table.set_column(table.schema.get_field_index("score"), "score", table.column("score").cast("string")), shard)
    with pytest.raises(ConfigError, match="relative"):
        load([str(a), str(relative)])
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "scores").mkdir()
    (tmp_path / "half" / "scores" / "part-00000.parquet").write_bytes(b"")  # no manifest: not finished
    with pytest.raises(DatasetError, match="no finished shard"):
        load([str(a), str(tmp_path / "half")])
    broken = tmp_path / "broken.json"
    broken.write_text('[{"gold": 1}, ')
    with pytest.raises(DatasetError, match="broken.json"):
        load([str(a), str(broken)], refs=["gold"])
    only_text = write_data(tmp_path / "text.jsonl", [{"gold": "good"}, {"gold": "bad"}])
    with pytest.raises(ConfigError, match="--ref 'gold' in text holds no scores"):
        load([str(only_text), str(a)], refs=["gold"])
    assert json.loads((a / "job.json").read_text())["fingerprint"]["dataset.id_field"] is None
