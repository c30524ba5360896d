"""The Ray Data pipeline: read rows with their prompts -> judge them through a pool of async clients.

Prompts are rendered in the read task (`prompt_columns`, on each record as read); judging runs in
a pool of actors, each with one async HTTP client whose in-flight bound is its share of
`judge.max_in_flight`, so the pool as a whole never has more requests out than that. Ray Data's streaming executor backpressures the reader when
the judges fall behind, so the dataset is never read into memory whole. Nothing here raises for
a bad row: every row leaves with its verdict or its errors, each error with its reason code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import asdict
from typing import Any, Dict, List, Optional, Union

import pyarrow as pa

from jobs.config import DatasetConfig
from jobs.data.datasource import READ_ERROR, ROW_ID, ROW_INDEX
from jobs.judge.modes import JOB_MODES, Mode, get_mode
from jobs.judge.prompts import PromptError
from jobs.judge.reasons import Failure, Reason
from jobs.judge.row_judge import JudgeSettings, RowJudge, RowVerdict, SampleVerdict

log = logging.getLogger(__name__)

PROMPT = "_prompt"
MORE_PROMPTS = "_more_prompts"  # a row's further prompts (swapped order, second response), JSON text
RENDER_ERROR = "_render_error"


def result_schema(mode: Union[str, Mode]) -> pa.Schema:
    """Columns every scored row gains; fixed types so all shards share one schema."""
    m = get_mode(mode)
    return pa.schema(
        [
            ("scores", pa.list_(m.sample_type)),
            ("score", m.score_type),
            ("score_expected", pa.float64()),
            ("score_probs", pa.list_(pa.list_(pa.float64()))),
            ("feedbacks", pa.list_(pa.string())),
            *m.extra_fields(),
            ("errors", pa.list_(pa.string())),
            ("error_reasons", pa.list_(pa.string())),  # the reason code of each error, index-aligned
            ("judge_model", pa.string()),
            ("judge_backend", pa.string()),
            ("judge_member", pa.string()),
            ("judge_replica", pa.string()),
            ("judge_node", pa.string()),  # the Ray node id of that replica
            ("judge_model_file", pa.string()),
            ("judge_model_sha256", pa.string()),
            ("prompt_tokens", pa.int64()),
            ("completion_tokens", pa.int64()),
            ("latency_s", pa.float64()),
        ]
    )


# Every column any mode writes (modes of several prompts a row add some), and the read task's own:
# an input column named like one of them is kept as input_<name> (it would be overwritten, or dropped).
RESULT_COLUMNS = tuple(dict.fromkeys(n for m in JOB_MODES for n in result_schema(m).names)) + (
    ROW_ID, ROW_INDEX, "prompt", READ_ERROR, PROMPT, MORE_PROMPTS, RENDER_ERROR)


# -- rendering --------------------------------------------------------------------------------
def prompt_columns(record: Optional[Dict[str, Any]], dataset: DatasetConfig,
                   mode: Union[str, Mode]) -> Dict[str, Optional[str]]:
    """The judge prompt of a record as read, or why it cannot have one (None: unreadable row).
    A mode of several prompts a row also gets `MORE_PROMPTS` (the others, as JSON text).

    Runs in the read task on the record's own Python values, so a number where text belongs is
    still a number here, not the JSON text a mixed-type column becomes in Arrow.
    """
    m = get_mode(mode)
    several = len(m.orders) > 1
    out: Dict[str, Optional[str]] = {PROMPT: None, RENDER_ERROR: None, **({MORE_PROMPTS: None} if several else {})}
    if record is None:
        return out
    try:
        prompts = m.render_prompts(record, dataset)
    except PromptError as e:
        return dict(out, **{RENDER_ERROR: str(e)})
    out[PROMPT] = prompts[0]
    if several:
        out[MORE_PROMPTS] = json.dumps(prompts[1:])
    return out


# -- judging ----------------------------------------------------------------------------------
class JudgeActor:
    """A Ray Data actor: judges the rows of each batch concurrently, within its in-flight bound."""

    def __init__(self, url: str, api_key: Optional[str], settings: Dict[str, Any], in_flight: int,
                 timeout_s: float, max_retries: int, keep_prompt: bool):
        self.url, self.api_key = url, api_key
        self.settings = JudgeSettings(**settings)
        self.in_flight = in_flight
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.keep_prompt = keep_prompt
        self._judge: Optional[RowJudge] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def __del__(self):
        """Ray Data deletes the UDF as the actor shuts down: close the client's connections on
        their own event loop, so aiohttp has no unclosed session to complain about."""
        if self._judge is None:
            return
        client, loop = self._judge.client, self._loop
        try:
            if loop is not None and loop.is_running() and not _running_on(loop):
                asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=5)
            else:
                client.close_now()
        except Exception:  # noqa: BLE001 - a finalizer must not raise
            pass

    async def __call__(self, batch: pa.Table) -> pa.Table:
        if self._judge is None:  # created on the actor's event loop, on first use
            from jobs.client.http import OpenAIClient

            self._loop = asyncio.get_running_loop()

            client = OpenAIClient(self.url, self.api_key, self.timeout_s, self.max_retries, max_in_flight=self.in_flight,
                                  patience_s=self.timeout_s)
            self._judge = RowJudge(client, self.settings)
        cols = batch.select([ROW_ID, PROMPT, READ_ERROR, RENDER_ERROR]).to_pydict()
        more = (batch.column(MORE_PROMPTS).to_pylist() if MORE_PROMPTS in batch.column_names
                else [None] * batch.num_rows)
        verdicts = await asyncio.gather(
            *(self._one(rid, prompt, read_err, render_err, json.loads(others) if others else [])
              for rid, prompt, read_err, render_err, others
              in zip(cols[ROW_ID], cols[PROMPT], cols[READ_ERROR], cols[RENDER_ERROR], more))
        )
        out = batch.drop_columns([c for c in (PROMPT, MORE_PROMPTS, RENDER_ERROR, READ_ERROR) if c in batch.column_names])
        if self.keep_prompt:
            out = out.append_column("prompt", batch.column(PROMPT))
        for name, column in result_columns(verdicts, self.settings).items():
            out = out.append_column(name, column)
        return out

    async def _one(self, row_id: str, prompt: Optional[str], read_error: Optional[str],
                   render_error: Optional[str], more: Optional[List[str]] = None) -> RowVerdict:
        n, orders = self.settings.num_samples, self.settings.job_mode.orders
        if read_error:  # the reader could not take the row in
            return _refused(Failure(Reason.UNREADABLE_ROW, read_error), n, len(orders))
        if render_error or prompt is None:
            return _refused(Failure(Reason.BAD_ROW, f"bad row: {render_error}"), n, len(orders))
        try:
            if len(orders) == 1:
                return await self._judge.judge(prompt, row_id)
            return await self._judge.judge_row([prompt, *(more or [])], row_id, list(orders))
        except Exception as e:  # noqa: BLE001 - a bug must cost one row, not the job
            log.exception("judging row %s failed", row_id)
            return _refused(Failure(Reason.INTERNAL_ERROR, f"internal error: {type(e).__name__}: {e}"), n, len(orders))


def result_columns(verdicts: List[RowVerdict], s: JudgeSettings) -> Dict[str, pa.Array]:
    """The result columns of judged rows, typed by `result_schema`."""
    mode = s.job_mode
    schema = result_schema(mode)
    values: Dict[str, list] = {name: [] for name in schema.names}
    for v in verdicts:
        for name, value in mode.row_values(v.orders).items():
            values[name].append(value)
        values["errors"].append([e.message for e in v.errors] or None)
        values["error_reasons"].append([e.reason.value for e in v.errors] or None)
        values["judge_model"].append(s.model)
        values["judge_backend"].append(v.lineage.get("backend"))
        values["judge_member"].append(v.lineage.get("member"))
        values["judge_replica"].append(v.lineage.get("replica"))
        values["judge_node"].append(v.lineage.get("node"))
        values["judge_model_file"].append(v.lineage.get("model_file"))
        values["judge_model_sha256"].append(v.lineage.get("model_sha256"))
        values["prompt_tokens"].append(v.prompt_tokens)
        values["completion_tokens"].append(v.completion_tokens)
        values["latency_s"].append(round(v.latency_s, 4))
    return {name: pa.array(values[name], schema.field(name).type) for name in schema.names}


def _running_on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _refused(failure: Failure, n: int, prompts: int = 1) -> RowVerdict:
    """A row that is not sent to the judge: unscored samples (of each prompt) and one error."""
    return RowVerdict(samples=[SampleVerdict() for _ in range(n)], errors=[failure],
                      more_samples=[[SampleVerdict() for _ in range(n)] for _ in range(prompts - 1)])


# -- assembly ---------------------------------------------------------------------------------
def build_dataset(datasource, settings: JudgeSettings, url: str,
                  api_key: Optional[str], clients: int, max_in_flight: int, timeout_s: float,
                  max_retries: int, keep_prompt: bool):
    import ray.data

    per_actor = max(1, max_in_flight // clients)
    return ray.data.read_datasource(datasource).map_batches(
        JudgeActor,
        fn_constructor_kwargs=dict(url=url, api_key=api_key, settings=asdict(settings), in_flight=per_actor,
                                   timeout_s=timeout_s, max_retries=max_retries, keep_prompt=keep_prompt),
        # Ray Data runs up to 4 batches of an async actor at once; batches of about half the
        # in-flight bound keep the client busy without holding many rows per actor.
        batch_size=max(1, math.ceil(per_actor / 2)),
        batch_format="pyarrow",
        # Several blocks in flight per actor: with one, an actor waits for a block's slowest row (a
        # slow member's) before drawing more, and fast members idle in waves. The client's in-flight
        # bound still caps requests (benchmarks/reports/fleet.md: 0.40 -> 1.02 of a mixed pool's sum).
        compute=ray.data.ActorPoolStrategy(size=clients, max_concurrent_calls_per_actor=4),
        num_cpus=0.1,
    )
