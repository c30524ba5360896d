"""`judgefleet score`'s checks before Ray on hostile datasets (no Ray, no judge: the judge URL
refuses connections, so a job that passes the dataset checks stops at the endpoint check)."""

import json

import pytest

from jobs.commands.score import run
from jobs.config import load_config
from jobs.errors import DatasetError, EndpointError
from tests.conftest import QUICKSTART, free_port


def config(path, out, *more):
    return load_config(QUICKSTART, [f"judge.url=http://127.0.0.1:{free_port()}/v1", f"dataset.path={path}",
                                    f"output.dir={out}", "tracking.mode=disabled", "output.group_by=[]", *more])


def test_a_first_row_without_a_column_is_a_bad_row_not_a_refused_job(write_jsonl, tmp_path):
    # Before: the column check read the first record only, and refused the whole dataset.
    path = write_jsonl([{"instruction": "q0", "rubric": "r"}, {"instruction": "q1", "response": "a", "rubric": "r"}])
    with pytest.raises(EndpointError):  # past the dataset checks
        run(config(path, tmp_path / "out"))
    with pytest.raises(DatasetError, match="no column 'reference'"):  # a column no row has is still a typo
        run(config(path, tmp_path / "out", "dataset.response_field=reference"))
    job = json.loads((tmp_path / "out" / "job.json").read_text())
    assert [c[0] for c in job["columns"]] == ["instruction", "rubric", "response"]
