"""`buffercast` command line (typer)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Buffer stock recommendations per SKU: JIT, JIC or hybrid.")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def quiet_environment() -> None:
    """Project-local Prefect home, no analytics or telemetry calls (the machine may have no network)."""
    os.environ.setdefault("PREFECT_HOME", str(PROJECT_ROOT / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary server's first start on a fresh clone (new database, cold bytecode) on a loaded machine can take
    # minutes, far beyond Prefect's 20 s: generous by default, the environment variable sets another limit.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


class _NoTracebackForBadInput(logging.Filter):
    """Bad input and a stage time-out are the operator's to act on, not crashes: Prefect logs them as one line,
    without the traceback.

    Prefect's engines log every failure with exc_info; the CLI prints the error's own message last.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.task_engine import TaskRunTimeoutError

        from flows.publish import PublishError
        from flows.tasks import StageTimeout, StageWorkerDied
        from forecasting.workers import WorkerDied
        from pipeline.contracts import InputError

        # A stage's time-out (Prefect's TaskRunTimeoutError in the task, StageTimeout in the flow); a dead worker has
        # no Python traceback to show, the parent's adds nothing to the one line.
        quiet = InputError | PublishError | TaskRunTimeoutError | StageTimeout | WorkerDied | StageWorkerDied
        if record.exc_info and isinstance(record.exc_info[1], quiet):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_bad_input_tracebacks() -> None:
    import prefect.logging.handlers  # noqa: F401  (Prefect configures its handlers on import)

    from configs.secrets import PREFECT_LOGGERS, redact_logs

    for name in PREFECT_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(_NoTracebackForBadInput())
    redact_logs(*PREFECT_LOGGERS)


def _fail(message: str, code: int) -> typer.Exit:
    from configs.secrets import redact

    typer.secho(f"buffercast: error: {redact(message)}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _names_sku_master(config: Path | None) -> bool:
    """Whether the user's config file sets `input.sku_master` itself (configs/default.yaml names the sample's)."""
    if config is None or not Path(config).is_file():
        return False
    try:
        raw = yaml.safe_load(Path(config).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False  # load_config reports it, with the file, line and column
    return isinstance(raw, dict) and isinstance(raw.get("input"), dict) and "sku_master" in raw["input"]


def _overrides(
    *, sales: str | None, sku_master: str | None, no_sku_master: bool, out: str | None, freq: str | None, tracking_uri: str | None,
    config: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The config keys the common command-line flags set. `--sales` without `--sku-master` runs without a SKU master
    (every SKU gets the config's defaults, and says so in its reasons) unless the user's own config names one: the
    default config's master belongs to the sample data, not to the user's sales."""
    from configs.secrets import to_reference

    # A password typed into a URL on the command line is moved into an environment variable of this process and the
    # URL references it: the config (the flow's parameters, which Prefect stores) never holds it (configs/secrets.py).
    sales = sales and to_reference(sales, "BUFFERCAST_SALES_PASSWORD")
    sku_master = sku_master and to_reference(sku_master, "BUFFERCAST_SKU_MASTER_PASSWORD")
    tracking_uri = tracking_uri and to_reference(tracking_uri, "BUFFERCAST_TRACKING_PASSWORD")
    overrides: dict[str, Any] = {}
    if sales:
        overrides.setdefault("input", {})["sales"] = sales
    if sku_master or no_sku_master or (sales and not _names_sku_master(config)):
        overrides.setdefault("input", {})["sku_master"] = sku_master
    if out:
        overrides["output"] = {"folder": out}
    if freq:
        overrides["frequency"] = freq
    if tracking_uri:
        overrides["tracking"] = {"uri": tracking_uri}
    return overrides


def _run_flow(flow_name: str, config: Path | None, overrides: dict[str, Any], what: str) -> Any:
    """Load and validate the config, look at the inputs (`flows.sources.preflight`), run the flow on it; bad input or
    config exits 2 with one line, before any server starts where it can be seen from the files' first rows; any other
    failure 1 (the flow already logged the traceback). `flow_name`: "module:function" of the flow, imported only once
    the inputs passed their look (importing it loads Prefect)."""
    from configs.schema import ConfigError, load_config
    from flows.publish import PublishError
    from flows.sources import preflight
    from pipeline.raw import InputError

    try:
        cfg = load_config(config, overrides)
        preflight(cfg)  # bad input or an unusable output folder fails here, before Prefect is even imported
    except (ConfigError, InputError, PublishError) as exc:
        raise _fail(str(exc), 2) from None
    import importlib

    from flows.tasks import StageTimeout, StageWorkerDied

    module, name = flow_name.split(":")
    flow = getattr(importlib.import_module(module), name)  # Prefect loads here, after the inputs passed their look
    _quiet_bad_input_tracebacks()
    try:
        return flow(cfg)
    except (InputError, PublishError) as exc:
        raise _fail(str(exc), 2) from None
    except (StageTimeout, StageWorkerDied) as exc:
        raise _fail(str(exc), 1) from None
    except Exception as exc:  # the flow already logged the traceback; the user gets one line
        raise _fail(f"{what} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", 1) from None


@app.command()
def run(
    config: Annotated[Path | None, typer.Option(help="YAML config, deep-merged over configs/default.yaml.")] = None,
    sales: Annotated[str | None, typer.Option(help="Sales file, folder or URL (overrides input.sales).")] = None,
    sku_master: Annotated[str | None, typer.Option(help="SKU master file, folder or URL (overrides input.sku_master).")] = None,
    no_sku_master: Annotated[bool, typer.Option("--no-sku-master", help="Run without a SKU master: config defaults apply.")] = False,
    out: Annotated[str | None, typer.Option(help="Output folder (overrides output.folder).")] = None,
    as_of: Annotated[str | None, typer.Option(help="Run as of this date, YYYY-MM-DD; later history is left out.")] = None,
    freq: Annotated[str | None, typer.Option(help="Bucket: D, W or M.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (overrides tracking.uri).")] = None,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Fetch the whole sales history and rebuild input.cache_folder.")
    ] = False,
) -> None:
    """Run the whole pipeline: pull, validate, profile, backtest, forecast, recommend, publish, track."""
    quiet_environment()  # before prefect is imported
    if sku_master and no_sku_master:
        raise _fail("--sku-master and --no-sku-master exclude each other", 2)
    overrides = _overrides(
        sales=sales, sku_master=sku_master, no_sku_master=no_sku_master, out=out, freq=freq, tracking_uri=tracking_uri, config=config
    )
    if as_of:
        overrides["as_of"] = as_of
    if full_refresh:
        overrides.setdefault("input", {})["full_refresh"] = True
    result = _run_flow("flows.plan:plan_buffers", config, overrides, "the run")
    typer.echo(format_summary(result))


@app.command()
def evaluate(
    config: Annotated[Path | None, typer.Option(help="YAML config, deep-merged over configs/default.yaml.")] = None,
    sales: Annotated[str | None, typer.Option(help="Sales file, folder or URL (overrides input.sales).")] = None,
    sku_master: Annotated[str | None, typer.Option(help="SKU master file, folder or URL (overrides input.sku_master).")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder (overrides output.folder); the table goes to OUT/evaluations/.")] = None,
    origins: Annotated[int | None, typer.Option(min=1, help="Rolling origins (overrides evaluation.origins).")] = None,
    freq: Annotated[str | None, typer.Option(help="Bucket: D, W or M.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (overrides tracking.uri).")] = None,
) -> None:
    """Evaluate the plan out of sample: plan at rolling origins with the data up to each, judge on what came after.

    Prints achieved cycle service and safety-stock value per target for buffercast and the baselines (textbook,
    empirical quantile, DDMRP); publishes the `evaluation` table and logs an MLflow run with the trade-off curves.
    """
    quiet_environment()  # before prefect is imported
    overrides = _overrides(
        sales=sales, sku_master=sku_master, no_sku_master=False, out=out, freq=freq, tracking_uri=tracking_uri, config=config
    )
    if origins:
        overrides["evaluation"] = {"origins": origins}
    result = _run_flow("flows.evaluate:evaluate_plans", config, overrides, "the evaluation")
    typer.echo(format_evaluation(result))


def format_evaluation(r: dict[str, Any]) -> str:
    """Per target: achieved cycle service [Wilson 95%] and safety-stock value per window, buffercast and baselines."""
    lines = [
        "",
        f"buffercast evaluation: {len(r['origins'])} origins ({r['origins'][0]} .. {r['origins'][-1]}), "
        f"{r['judged_windows']} judged rows, {r['unjudged_windows']} SKU windows past the end of the data",
        f"  {'method':<18}{'target':>7}{'windows':>9}{'achieved':>10}{'95% interval':>17}{'SS value/window':>17}",
    ]
    for row in r["overview"]:
        target = "" if row["target"] is None else f"{row['target']:.3g}"
        interval = f"{row['achieved_low']:.3f}-{row['achieved_high']:.3f}"
        lines.append(
            f"  {row['method']:<18}{target:>7}{row['windows']:>9}{row['achieved']:>10.3f}{interval:>17}{row['safety_stock_value']:>17,.2f}"
        )
    lines += [f"  written: {path}" for path in r["outputs"].values()]
    lines.append(f"  MLflow run {r['mlflow_run_id']} (experiment buffercast-<name>-evaluation)")
    return "\n".join(lines)


def format_summary(r: dict[str, Any]) -> str:
    def line(title: str, counts: dict[str, int]) -> str:
        return f"  {title:<18}" + ", ".join(f"{k} {v}" for k, v in counts.items())

    rows = r["input_rows"]
    parts = [
        "",
        f"buffercast: {r['skus']} SKUs planned as of {r['as_of']}",
        f"  sales rows         {rows['sales_in']} read, {rows['sales_used']} used, {rows['sales_quarantined']} quarantined, "
        f"{rows['sales_after_as_of']} after the as-of date"
        + (f" ({rows['sales_fetched']} fetched, {rows['sales_cached']} from the cache)" if rows.get("sales_cached") else ""),
        *(
            [
                f"  not planned        {r['series_not_planned']} series without a positive sale up to the last complete period "
                "(listed in the manifest)"
            ]
            if r["series_not_planned"]
            else []
        ),
        line("demand class", r["demand_class"]),
        line("volatility class", r["volatility_class"]),
        line("life cycle", r["life_cycle"]),
        line("policy", r["policy"]),
        f"  safety stock value {r['safety_stock_value']:,.2f} (holding cost {r['holding_cost_per_year']:,.2f} per year)",
        "  written:",
        *[f"    {name:<17}{path}" for name, path in r["outputs"].items()],
        f"    {'manifest':<17}{r['manifest']}",
        *([f"  REPORT NOT RENDERED: {r['report_error']} (the tables are published; see the log)"] if r.get("report_error") else []),
        f"  MLflow run {r['mlflow_run_id']} in {r['mlflow_tracking_uri']}",
        "  open it with: make ui   (then http://127.0.0.1:5000)",
    ]
    return "\n".join(parts)


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option(help="YAML config, deep-merged over configs/default.yaml.")] = None,
    port: Annotated[int, typer.Option(help="Port of the local Prefect server started when no PREFECT_API_URL is set.")] = 4200,
) -> None:
    """Serve the weekly deployment plan-buffers/plan-buffers-weekly (cron and time zone from the config) until Ctrl-C.

    Uses PREFECT_API_URL when set; otherwise starts a Prefect server on 127.0.0.1:PORT for as long as it serves
    (schedules never fire on Prefect's temporary server).
    """
    quiet_environment()
    # Ctrl-C must stop it even when started in the background of a script, where the shell leaves SIGINT ignored
    # and Python would keep it so (SIGINT then did nothing; only SIGTERM stopped it).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from configs.schema import ConfigError
    from flows.deploy import ServerError
    from flows.deploy import serve as serve_deployment

    try:
        serve_deployment(str(config) if config else None, port=port)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    except ServerError as exc:
        raise _fail(str(exc), 1) from None


@app.command()
def recover(
    config: Annotated[Path | None, typer.Option(help="YAML config, deep-merged over configs/default.yaml.")] = None,
    out: Annotated[str | None, typer.Option(help="Output folder (overrides output.folder).")] = None,
) -> None:
    """Repair an output folder after a run was killed (kill -9, a lost machine): finish or undo its interrupted swap
    from the journal and clear the staging litter, under the folder's lock. Every run does this first by itself."""
    from configs.schema import ConfigError, load_config
    from flows.publish import EVALUATIONS, PublishError, output_lock

    try:
        cfg = load_config(config, {"output": {"folder": out}} if out else None)
        for root in (Path(cfg.output.folder), Path(cfg.output.folder) / EVALUATIONS):
            if not root.is_dir():
                continue
            with output_lock(root, cfg.output.lock_wait_seconds) as done:
                for line in done:
                    typer.echo(f"{root.resolve()}: {line}")
                if not done:
                    typer.echo(f"{root.resolve()}: consistent, nothing to recover")
    except (ConfigError, PublishError) as exc:
        raise _fail(str(exc), 2) from None


@app.command("config")
def show_config(
    config: Annotated[Path | None, typer.Option(help="YAML config, deep-merged over configs/default.yaml.")] = None,
    defaults: Annotated[
        bool, typer.Option("--defaults", help="Print the schema defaults instead: the text of configs/default.yaml.")
    ] = False,
) -> None:
    """Print a configuration as commented YAML: the one a run would use, or with --defaults every default.

    Without --defaults: configs/default.yaml deep-merged with --config PATH, validated, relative paths made absolute.
    `buffercast config --defaults > configs/default.yaml` regenerates the committed defaults from the schema.
    """
    from configs.schema import ConfigError, load_config, render_config, render_defaults

    if defaults:
        if config is not None:
            raise _fail("--defaults and --config exclude each other", 2)
        typer.echo(render_defaults(), nl=False)
        return
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    sources = " <- ".join(["configs/default.yaml", *([str(config)] if config else [])])
    typer.echo(render_config(cfg, f"# buffercast configuration in effect: {sources} (relative paths made absolute).\n"), nl=False)


@app.command("schema")
def show_schema(
    table: Annotated[str | None, typer.Option(help="One published table (e.g. recommendations); default: every table.")] = None,
) -> None:
    """Print the JSON Schema of the published tables (one row each; derived from the pandera contracts).

    The same files are written with every run next to the outputs: `schemas/as_of=YYYY-MM-DD/<table>.schema.json`.
    """
    import json

    from pipeline.contracts import CONTRACTS, OUTPUT_SCHEMAS, json_schema

    if table is not None and table not in CONTRACTS:
        raise _fail(f"no published table {table!r}; the tables are {', '.join(CONTRACTS)}", 2)
    doc = json_schema(table) if table else {name: json_schema(name) for name in OUTPUT_SCHEMAS}
    typer.echo(json.dumps(doc, indent=2))


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Option(help="Folder to write sales and sku_master into.")] = Path("data/sample"),
    skus: Annotated[int, typer.Option(min=1, help="Number of SKUs.")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.")] = 7,
    days: Annotated[int, typer.Option(min=1, help="Days of history.")] = 730,
    end: Annotated[str, typer.Option(help="Last date of the history, YYYY-MM-DD.")] = "2026-10-31",
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
) -> None:
    """Generate the embedded default catalogue: daily sales and a SKU master (deterministic)."""
    from flows.sample_data import write_sample_data

    try:
        end_date = dt.date.fromisoformat(end)
        paths = write_sample_data(out, n_skus=skus, seed=seed, end_date=end_date, n_days=days, fmt=fmt)  # type: ignore[arg-type]
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
