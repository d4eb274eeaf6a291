"""MLflow tracking: the only module that imports mlflow.

One MLflow run per flow run, driven through `MlflowClient` (no global active run), so a flow can start
the run early (its id goes into the manifest) and finish it after publishing.

mlflow is imported when a `Tracker` is made, not with this module: importing it costs seconds (bench/fixed_cost.py),
and a run that fails on its input, or a command that tracks nothing, should not pay for it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from configs.secrets import has_reference, resolve
from flows import secrets as _secrets  # noqa: F401  (registers ${prefect-secret:NAME})
from flows.publish import write_table

if TYPE_CHECKING:
    from mlflow.data.dataset_source import DatasetSource

MAX_PARAM_LENGTH = 6000


def resolve_tracking_uri(uri: str) -> str:
    """Make a relative `sqlite:///file.db` (or bare path) absolute, so the working directory stops mattering."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    if "://" not in uri:
        return Path(uri).resolve().as_uri()
    return uri


def _artifact_location(uri: str, artifact_location: str | None) -> str | None:
    """A local store gets an absolute artifact root; a remote server keeps its own default."""
    if artifact_location is None or uri.startswith(("http://", "https://", "databricks")):
        return None
    if "://" in artifact_location:
        return artifact_location
    return Path(artifact_location).resolve().as_uri()


class Tracker:
    """Thin wrapper over MlflowClient for one run."""

    def __init__(
        self, uri: str, experiment: str, artifact_location: str | None = None, *, http_retries: int = 2, http_timeout_s: int = 30
    ) -> None:
        # MLflow's own HTTP client retries 7 times with backoff (minutes against a dead server); the flow retries
        # whole tracking steps itself, so each call here fails fast. Read by mlflow at request time.
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(http_retries)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(http_timeout_s)
        self.uri = resolve_tracking_uri(uri)  # as written: a credential stays a reference (configs/secrets.py)
        if has_reference(self.uri):  # MLflow prints "View run at <url>" with the resolved URL: its credential with it
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=resolve(self.uri, key="tracking.uri"))
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            exp.experiment_id
            if exp is not None
            else self.client.create_experiment(experiment, artifact_location=_artifact_location(self.uri, artifact_location))
        )
        self.run_id: str | None = None

    def start(self, run_name: str, tags: Mapping[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
        self.run_id = run.info.run_id
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, ("" if v is None else str(v))[:MAX_PARAM_LENGTH]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        items = [Metric(k, float(v), 0, 0) for k, v in sorted(metrics.items()) if v is not None]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_dataset(
        self, frame: pl.DataFrame, *, source: str, name: str, context: str, rows: int | None = None, digest: str | None = None
    ) -> None:
        """Input lineage: the dataset's schema, size and digest, its source, and its role (`context`) in the run.
        `rows` and `digest`: of a dataset not held in one frame; `frame` then stands for it (its schema, and which
        columns have a value: e.g. one row of each column's first value)."""
        import mlflow.data
        from mlflow.entities import Dataset as DatasetEntity
        from mlflow.entities import DatasetInput, InputTag

        root = logging.getLogger()
        with warnings.catch_warnings(), _dropping(root, "will be mapped to DataType.datetime"):
            # MLflow registers its local-artifact source twice and says so on every local path, and logs (on the root
            # logger) that a Date column is recorded as a datetime in the dataset's schema: noise, not a problem.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
            origin = _database_source()(source) if source.startswith(("postgresql://", "postgres://")) else source
            entity = mlflow.data.from_polars(frame, source=origin, name=name, digest=digest)._to_mlflow_entity()  # schema inferred
        if rows is not None:
            profile = json.dumps({"num_rows": rows, "num_elements": rows * frame.width})  # as MLflow profiles a frame
            entity = DatasetEntity(entity.name, entity.digest, entity.source_type, entity.source, entity.schema, profile)
        tags = [InputTag(key="mlflow.data.context", value=context)]
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(entity, tags=tags)])

    def log_viewable_table(self, frame: pl.DataFrame, artifact_file: str) -> None:
        """A table the MLflow UI shows in its artifact viewer (JSON, via `log_table`)."""
        self.client.log_table(self.run_id, data=frame.to_pandas(), artifact_file=artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        """A file's bytes (e.g. a PNG rendered once for both the report and MLflow) as `artifact_file`."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_bytes(data)
            parent = str(Path(artifact_file).parent)
            self.client.log_artifact(self.run_id, str(path), None if parent == "." else parent)

    def log_table(self, name: str, frame: pl.DataFrame | pl.LazyFrame, artifact_path: str = "tables") -> None:
        """A table as a Parquet artifact `<artifact_path>/<name>.parquet` (a LazyFrame streamed to it)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.parquet"
            write_table(frame, path)  # as published: the same bytes whatever the partition size
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish_quietly(self, ok: bool) -> None:
        """`finish`, on a path that is already failing: an unreachable server must not hide the first error."""
        with contextlib.suppress(Exception):
            self.finish(ok)

    def finish(self, ok: bool) -> None:
        from mlflow.entities import RunStatus

        status = RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED)
        self.client.set_terminated(self.run_id, status=status)


@contextlib.contextmanager
def _dropping(logger: logging.Logger, text: str):
    """Drop `logger`'s own records whose message contains `text` while the block runs."""

    def keep(record: logging.LogRecord) -> bool:
        return text not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


@functools.cache
def _database_source() -> type[DatasetSource]:
    """`DatabaseSource`, defined on first use (it subclasses an mlflow class: see the module's docstring)."""
    from mlflow.data.dataset_source import DatasetSource

    class DatabaseSource(DatasetSource):
        """A dataset read from a database (MLflow resolves no `postgresql://` source of its own): its URL as written, a
        credential left as its reference."""

        def __init__(self, uri: str) -> None:
            self._uri = uri

        @staticmethod
        def _get_source_type() -> str:
            return "database"

        def load(self, **kwargs: Any) -> Any:
            raise NotImplementedError("read it with buffercast's PostgreSQL source (flows/sources.py)")

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> DatabaseSource:
            raise NotImplementedError

        def to_dict(self) -> dict[str, Any]:
            return {"uri": self._uri}

        @classmethod
        def from_dict(cls, source_dict: dict[Any, Any]) -> DatabaseSource:
            return cls(source_dict["uri"])

    return DatabaseSource
