import hashlib
import io
import json
import tarfile

import pytest
from astropy.table import Table

from gpscat.cli import main
from gpscat.config import load_config
from gpscat.stages.release import run, sha256_file, verify_release
from gpscat.stages.simulate import simulate_survey


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    sim = simulate_survey(
        {"simulation": {"models": "", "pointings": {"lon_min": "0 deg", "lon_max": "1 deg"}, "livetime": "0.05 h"}},
        root / "store",
        seed=3,
    )
    return sim


def _products(tmp_path):
    a = tmp_path / "results" / "catalog.fits"
    a.parent.mkdir(parents=True)
    Table({"Source_Name": ["X"], "TS": [30.0]}).write(a)
    b = tmp_path / "results" / "catalog.reg"
    b.write_text("# Region file format: DS9\ngalactic\ncircle(0,0,0.1)\n")
    return [a, b]


def test_release_bundles_and_verifies(tmp_path, store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(overrides={**store.config.to_dict(), "run": {"name": "test-cat"}, "release": {"version": "1.2"}})
    cfg_file = tmp_path / "my.yaml"
    cfg_file.write_text("run: {name: test-cat}\n")
    out = tmp_path / "release" / "test-cat-1.2.tar.gz"
    manifest = run(cfg, products=_products(tmp_path), output=out, obs_ids=store.obs_ids, config_files=[cfg_file])
    assert verify_release(out) == []
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        assert "test-cat-1.2/products/results/catalog.fits" in names
        assert "test-cat-1.2/config/config.resolved.yaml" in names
        assert "test-cat-1.2/config/my.yaml" in names
        obs = Table.read(tar.extractfile("test-cat-1.2/observations.ecsv").read().decode(), format="ascii.ecsv")
        versions = json.loads(tar.extractfile("test-cat-1.2/versions.json").read())
    # every input file of every observation, with its real checksum
    assert set(obs["OBS_ID"]) == set(store.obs_ids)
    assert {"events", "aeff", "psf", "edisp", "bkg"} <= set(obs["HDU_TYPE"])
    for row in obs:
        assert row["SHA256"] == sha256_file(row["FILE"])
    assert versions["config_hash"] == cfg.hash
    assert versions["numpy"] and versions["gpscat"]
    assert len(manifest) == len(names) - 1  # all but the manifest itself


def test_release_archive_is_reproducible(tmp_path, store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = store.config
    products = _products(tmp_path)
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    run(cfg, products=products, output=a, obs_ids=store.obs_ids)
    run(cfg, products=products, output=b, obs_ids=store.obs_ids)
    assert hashlib.sha256(a.read_bytes()).hexdigest() == hashlib.sha256(b.read_bytes()).hexdigest()


def test_tampered_release_fails_verification(tmp_path, store, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    cfg = store.config
    out = tmp_path / "r.tar.gz"
    run(cfg, products=_products(tmp_path), output=out)
    # rewrite the archive with one product changed, keeping the original manifest
    with tarfile.open(out) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        for m, data in members:
            if m.name.endswith("catalog.reg"):
                data = data.replace(b"0.1", b"0.2")
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    problems = verify_release(bad)
    assert len(problems) == 1 and "catalog.reg" in problems[0]
    assert main(["verify-release", str(bad)]) == 1
    assert main(["verify-release", str(out)]) == 0


def test_missing_product_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="nothere.fits"):
        run(load_config(), products=[tmp_path / "nothere.fits"], output=tmp_path / "x.tar.gz")
