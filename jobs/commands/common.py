"""What several commands build alike from one JobConfig: the judge endpoint's owner, the row
stream of the dataset, and the check that its columns are there."""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Optional

from jobs.config import JobConfig, check_requests, swap_of
from jobs.data.datasource import RowStream
from jobs.errors import DatasetError
from jobs.judge.modes import get_mode, job_mode
from jobs.runtime.pipeline import RESULT_COLUMNS, prompt_columns
from serve.config import OPENAI_LIMITS, route_limits
from serve.endpoint import Endpoint, JudgeEndpoint


def judge_endpoint(cfg: JobConfig, deploy: bool = False) -> JudgeEndpoint:
    """The owner of the job's judge endpoint: `judge.url` when given (and not `deploy`), else the
    route under `serve` (`deploy`: `judgefleet serve`'s standing route, on its well-known port)."""
    return JobEndpoint(cfg, None if deploy else cfg.judge.url, standing=deploy)


class JobEndpoint(JudgeEndpoint):
    """A job's judge endpoint: `check` also refuses an external endpoint whose stated limits every
    row would exceed (its context; judgefleet's route's request bounds), before Ray starts. The
    route deployed from `serve` was checked with the config (`jobs.config.validate`)."""

    def __init__(self, cfg: JobConfig, url: Optional[str], standing: bool = False):
        super().__init__(cfg.serve, cfg.judge.model, url=url, api_key_setting=cfg.judge.api_key,
                         ray_address=cfg.ray.address, ray_num_cpus=cfg.ray.num_cpus, standing=standing)
        self.job_config = cfg

    def check(self, timeout_s: float = 10.0) -> Optional[Endpoint]:
        endpoint = super().check(timeout_s)
        if endpoint is not None:
            limits = route_limits() if endpoint.route else OPENAI_LIMITS
            check_requests(self.job_config, dataclasses.replace(limits, context_length=endpoint.max_model_len))
        return endpoint


def row_stream(cfg: JobConfig, files, skip: Iterable[str] = (), prompts: bool = True) -> RowStream:
    """The dataset's rows with their ids (less `skip`), and their judge prompts when `prompts`."""
    mode = job_mode(cfg.judge.mode, swap_of(cfg))
    annotate = functools.partial(prompt_columns, dataset=cfg.dataset, mode=mode) if prompts else None
    return RowStream(files, cfg.dataset.format, cfg.dataset.id_field, cfg.dataset.limit, reserved=RESULT_COLUMNS,
                     annotate=annotate, skip=frozenset(skip))


def check_columns(first: Optional[dict], cfg: JobConfig) -> None:
    """The first record has the columns the config names (a typo fails here, not per row)."""
    if not first:
        return
    d = cfg.dataset
    needed = list(get_mode(cfg.judge.mode).required_columns(d))
    if d.id_field:
        needed.append(d.id_field)
    missing = [c for c in needed if c not in first]
    if missing:
        cols = ", ".join(first)
        hint = "dataset.prompt_field" if d.prompt_field else "the dataset.*_field settings"
        raise DatasetError(
            f"dataset has no column {', '.join(repr(m) for m in missing)} (its columns: {cols}); fix {hint}"
            + ("" if d.prompt_field or d.rubric is not None else ", or give one rubric for all rows with dataset.rubric")
        )
