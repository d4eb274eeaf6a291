"""The config schema: defaults, overrides, and errors that name the key."""

from __future__ import annotations

import datetime as dt
import types
import typing

import pytest
import yaml
from pydantic import BaseModel

from configs.schema import DEFAULT_CONFIG_PATH, BuffercastConfig, ConfigError, load_config, render_defaults

#: Keys `load_config` anchors at the repository root: the only differences between configs/default.yaml and the schema.
ANCHORED = (("input", "sales"), ("input", "sku_master"), ("output", "folder"), ("tracking", "uri"), ("tracking", "artifact_location"))


def test_default_yaml_is_the_schema_defaults():
    """configs/default.yaml spells out the defaults; only the process count and the anchored paths differ."""
    ours, schema = load_config().model_dump(), BuffercastConfig().model_dump()
    for dump in (ours, schema):
        dump["backtest"].pop("n_jobs")
        for section, key in (("input", "sales"), ("input", "sku_master"), ("output", "folder"), ("tracking", "uri")):
            dump[section].pop(key)
        dump["tracking"].pop("artifact_location")
    assert ours == schema
    cfg = load_config()
    assert cfg.frequency == "D" and cfg.sbc.adi_cutoff == 1.32 and cfg.sbc.cv2_cutoff == 0.49
    assert cfg.volatility.variable_from == 0.5 and cfg.volatility.erratic_from == 1.0
    assert cfg.service_levels.non_critical["C"] == 0.90 and cfg.cost.holding_rate_per_year == 0.25
    assert DEFAULT_CONFIG_PATH.exists()


def test_user_yaml_and_flags_override_deeply(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    user = tmp_path / "site.yaml"
    user.write_text("name: site-7\nfrequency: W\nsbc:\n  adi_cutoff: 1.5\nservice_levels:\n  critical: {A: 0.995, B: 0.99, C: 0.98}\n")
    cfg = load_config(user, {"as_of": "2026-03-01", "input": {"sales": "x.csv"}})
    assert cfg.name == "site-7" and cfg.frequency == "W" and cfg.period_days == 7.0 and cfg.season_length == 52
    assert cfg.sbc.adi_cutoff == 1.5 and cfg.sbc.cv2_cutoff == 0.49  # untouched sibling kept
    assert cfg.service_levels.critical["A"] == 0.995
    assert cfg.as_of == dt.date(2026, 3, 1) and cfg.input.sales == str(tmp_path / "x.csv")
    assert cfg.input.sku_master == str(DEFAULT_CONFIG_PATH.parent.parent / "data/sample/sku_master.parquet")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"sbc": {"adi_cut": 1.2}}, "unknown key 'sbc.adi_cut'"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"frequency": "Q"}, "'frequency'"),
        ({"as_of": "2024-13-45"}, "'as_of'"),
        ({"service_levels": {"non_critical": {"A": 1.2, "B": 0.9, "C": 0.9}}}, "service_levels.non_critical.A=1.2"),
        ({"service_levels": {"critical": {"D": 0.99}}}, "'service_levels.critical.D"),
        ({"volatility": {"variable_from": 1.0, "erratic_from": 0.5}}, "erratic_from must be greater"),
        ({"abc": {"a_share": 0.9, "b_share": 0.8}}, "b_share must be greater"),
        ({"policy": {"jit_max_lead_time_days": 40}}, "jic_min_lead_time_days must exceed"),
        ({"models": {"smooth": ["Prophet"]}}, "'models.smooth.0'"),
        ({"models": {"smooth": []}}, "at least one model"),
        ({"models": {"ets_model": "XYZ"}}, "'models.ets_model'"),
        ({"backtest": {"horizon_buckets": [4, 2]}}, "strictly increasing"),
        ({"cost": {"holding_rate_per_year": -1}}, "'cost.holding_rate_per_year'"),
        ({"scenarios": [{"name": "x", "kind": "baseline"}, {"name": "x", "kind": "lead_time", "factor": 2}]}, "x repeated"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match="invalid config") as err:
        load_config(None, override)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unreadable_yaml_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sbc: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(listing)


def test_flat_params_and_fingerprint_are_stable():
    a, b = load_config(), load_config()
    assert a.fingerprint() == b.fingerprint()
    assert load_config(None, {"seed": 1}).fingerprint() != a.fingerprint()
    flat = a.flat()
    assert flat["sbc.adi_cutoff"] == 1.32 and flat["service_levels.critical.A"] == 0.99
    assert all(not isinstance(v, dict) for v in flat.values())


def test_relative_paths_are_anchored_where_they_were_written(tmp_path, monkeypatch):
    root = DEFAULT_CONFIG_PATH.parent.parent
    monkeypatch.chdir(tmp_path)  # the command runs from elsewhere: defaults still point into the repository
    cfg = load_config()
    assert cfg.input.sales == str(root / "data/sample/sales.parquet")
    assert cfg.output.folder == str(root / "outputs")
    assert cfg.tracking.uri == f"sqlite:///{root / 'mlflow.db'}"
    site = tmp_path / "site"
    site.mkdir()
    (site / "site.yaml").write_text("input: {sales: sales/, sku_master: s3://bucket/items.parquet}\ntracking: {uri: 'sqlite:///runs.db'}\n")
    cfg = load_config(site / "site.yaml", {"output": {"folder": "out"}})
    assert cfg.input.sales == str(site / "sales")  # from the config file's folder
    assert cfg.input.sku_master == "s3://bucket/items.parquet"  # URLs untouched
    assert cfg.tracking.uri == f"sqlite:///{site / 'runs.db'}"
    assert cfg.output.folder == str(tmp_path / "out")  # flags: from the working directory


def test_default_yaml_is_generated_from_the_schema():
    assert DEFAULT_CONFIG_PATH.read_text() == render_defaults(), (
        "configs/default.yaml is out of date with configs/schema.py: run `.venv/bin/buffercast config --defaults > configs/default.yaml`"
    )


def test_rendered_defaults_round_trip():
    assert BuffercastConfig.model_validate(yaml.safe_load(render_defaults())) == BuffercastConfig()


def test_load_config_is_the_schema_defaults_but_the_anchored_paths():
    ours, schema = load_config().model_dump(), BuffercastConfig().model_dump()
    for dump in (ours, schema):
        for section, key in ANCHORED:
            dump[section].pop(key)
    assert ours == schema


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    """`model` and every model its fields hold (directly, in a list or dict, or in a union), once each."""
    found: list[type[BaseModel]] = []

    def walk(tp: object) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in found:
                found.append(tp)
                for info in tp.model_fields.values():
                    walk(info.annotation)
        elif isinstance(tp, types.UnionType) or typing.get_origin(tp) is not None:
            for arg in typing.get_args(tp):
                walk(arg)

    walk(model)
    return found


def test_every_key_of_the_schema_is_described():
    models = _models(BuffercastConfig)
    assert len(models) > 20 and sum(len(m.model_fields) for m in models) > 120
    undocumented = [m.__name__ for m in models if not (m.__doc__ or "").strip()]
    undescribed = [f"{m.__name__}.{name}" for m in models for name, info in m.model_fields.items() if not (info.description or "").strip()]
    assert undocumented == [] and undescribed == []
    assert not any("DOMAIN.md" in (m.__doc__ or "") + "".join(i.description or "" for i in m.model_fields.values()) for m in models)


def test_cli_prints_the_defaults():
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["config", "--defaults"])
    assert result.exit_code == 0, result.output
    assert result.stdout == render_defaults()


def test_sales_without_a_sku_master_runs_without_one_unless_the_users_config_names_one(tmp_path):
    """The default config names the sample's SKU master: `--sales mine.csv` alone must not pair the user's sales with
    it (it used to, whenever data/sample/ existed, and failed when it did not)."""
    from flows.cli import _overrides

    flags = dict(no_sku_master=False, out=None, freq=None, tracking_uri=None)
    assert _overrides(sales="mine.csv", sku_master=None, **flags)["input"] == {"sales": "mine.csv", "sku_master": None}
    assert load_config(None, _overrides(sales="mine.csv", sku_master=None, **flags)).input.sku_master is None
    assert _overrides(sales="mine.csv", sku_master="items.csv", **flags)["input"]["sku_master"] == "items.csv"
    own = tmp_path / "mine.yaml"
    own.write_text("input:\n  sku_master: my_items.parquet\n")
    assert "sku_master" not in _overrides(sales="mine.csv", sku_master=None, config=own, **flags)["input"]
    silent = tmp_path / "silent.yaml"
    silent.write_text("name: mine\n")  # says nothing of a master: none
    assert _overrides(sales="mine.csv", sku_master=None, config=silent, **flags)["input"]["sku_master"] is None
    assert "input" not in _overrides(sales=None, sku_master=None, **flags)  # no --sales: the config decides
