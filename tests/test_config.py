import json
import shlex

import pytest

from gpscat.cli import main
from gpscat.config import ConfigError, load_config, quantity, validate_config
from gpscat.workflow import stage_params, stage_sections


def test_defaults_filled_and_typed():
    cfg = load_config(overrides={"datasets": [{"name": "post", "energy": {"min": "1 TeV", "max": "100 TeV", "per_decade": 10}, "binsz": "0.03 deg", "offset_max": "3.5 deg"}]})
    (ds,) = cfg.datasets
    assert ds.binsz == pytest.approx(0.03)
    assert ds.energy_axis.nbin == 20
    assert ds.energy_axis.edges[0] == pytest.approx(1.0)
    assert ds.offset_max == pytest.approx(3.5)
    assert ds.cutout_width >= 2 * ds.offset_max
    assert cfg["background"]["method"] == "fov"
    geom = cfg.survey.geom(ds.binsz)
    assert geom.npix == (200, 133)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"surveyy": {}}, r"unknown key under \(top level\).*surveyy"),
        ({"survey": {"width": ["1 TeV", "2 deg"]}}, r"survey\.width\[0\].*'deg'.*1 TeV"),
        ({"datasets": [{"name": "a", "energy": {"min": "1 deg", "max": "2 TeV"}}]}, r"datasets\[0\]\.energy\.min"),
        ({"background": {"ring": {"r_in": 0.5}}}, r"background\.ring\.r_in"),
        ({"datasets": [{"name": "a", "energy": {"min": "2 TeV", "max": "1 TeV"}}]}, r"datasets\[0\]\.energy.*min < max"),
        ({"datasets": [{"name": "a", "energy": {"min": "1 TeV", "max": "2 TeV"}, "bogus": 1}]}, r"datasets\[0\].*bogus"),
    ],
)
def test_bad_config_names_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=override)


def test_quantity_requires_units():
    assert quantity("30 arcmin", "deg", key="x") == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="bare number"):
        quantity(0.5, "deg", key="x")


def test_validate_does_not_mutate_input():
    raw = {"survey": {"frame": "icrs"}}
    out = validate_config(raw)
    assert raw == {"survey": {"frame": "icrs"}}
    assert out["survey"]["projection"] == "CAR"


def test_stage_params_roundtrip_through_cli(tmp_path, capsys):
    params = stage_params({"fit": {}}, "significance")
    sections = json.loads(shlex.split(params)[0])
    assert set(sections) == {"run", "survey", "datasets", "significance"}
    assert sections == stage_sections({}, "significance")
    out = tmp_path / "resolved.yaml"
    assert main(["check-config", "--params", shlex.split(params)[0], "--output", str(out)]) == 0
    assert load_config(out)["significance"]["correlation_radii"] == ("0.1 deg", "0.2 deg")


def test_cli_reports_config_errors(tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text("survey:\n  width: [3 deg]\n")
    assert main(["check-config", "--config", str(bad)]) == 2
    assert "survey.width" in caplog.text
