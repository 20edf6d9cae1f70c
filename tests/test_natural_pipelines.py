"""Rot-MNIST weights through the pipelines a timm or torchvision user writes (issue #24): grey
PNG files of rotated MNIST test digits in MNIST's orientation. The full measurement over every
weight and 10,000 digits is eval/natural_pipelines.py; here every weight's two pipelines must
hand the model exactly what the zoo's own transform hands it, and one weight is scored."""
from __future__ import annotations

import importlib.util

import pytest
import torch

import agcnn_zoo as zoo
from agcnn_zoo.hub.catalogue import catalogue

from conftest import REPO

timm = pytest.importorskip("timm")

ROTMNIST = [w for w in catalogue().ids() if catalogue().record(w).get("dataset") == "rotmnist"]


def _script():
    spec = importlib.util.spec_from_file_location("natural_pipelines",
                                                  REPO / "eval" / "natural_pipelines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _script()


@pytest.fixture(scope="module")
def pngs(script, mnist_dir, tmp_path_factory):
    return script.write_pngs(str(mnist_dir), tmp_path_factory.mktemp("pngs"), 400)


@pytest.mark.parametrize("weight_id", ROTMNIST)
def test_timm_and_torchvision_pipelines_hand_the_model_the_zoos_input(weight_id, script, pngs,
                                                                      cache):
    from PIL import Image
    ours = zoo.transforms(weight_id)
    _, timm_load = script.timm_pipeline(weight_id)
    model, hub_load = script.hub_pipeline(weight_id)
    assert model.pretrained_cfg["weight_id"] == catalogue().resolve(weight_id)[0]
    for p in pngs[:16]:
        expected = ours(Image.open(p))
        torch.testing.assert_close(timm_load(p), expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(hub_load(p), expected, rtol=0, atol=1e-6)


def test_a_weight_scores_its_recorded_accuracy_through_timm(script, pngs, cache):
    wid = "p4cnn_rotmnist"
    model, load = script.timm_pipeline(wid)
    recorded = script.recorded(wid)
    natural = script.top1(model, pngs, load)
    # 400 digits: a standard error of about 0.7 points around the 10,000-digit figure
    assert natural >= recorded - 2.5, (natural, recorded)
    # the failure this guards against: digits held as the authors' files store them
    transposed = script.top1(model, pngs, lambda p: load(p).transpose(-2, -1))
    assert transposed < natural - 15, (transposed, natural)


def test_rgb_files_are_refused_with_what_the_model_takes(script, pngs, cache):
    model, load = script.timm_pipeline("p4cnn_rotmnist", mode="RGB")
    with pytest.raises(ValueError, match=r"\[B, 1, 28, 28\].*convert\('L'\)"):
        model(torch.stack([load(p) for p in pngs[:4]]))
    assert "refused" in script.rgb_result("p4cnn_rotmnist", pngs[:8])


# ----------------------------------------------------------------------------- the stored figures

def test_the_readme_pipeline_table_is_what_the_stored_figures_make(script):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split(script.BEGIN, 1)[1].split(script.END, 1)[0]
    assert block.lstrip("\n") == script.pipeline_table(script.load_results(), catalogue()), \
        "regenerate it: python eval/natural_pipelines.py --no-measure --write-readme README.md"


def test_every_rotmnist_weight_was_measured_through_both_pipelines_near_its_record(script):
    stored = script.load_results()
    assert sorted(stored) == sorted(ROTMNIST), \
        "measure the missing ones: python eval/natural_pipelines.py --data-dir DATA --models ID"
    for wid, entry in stored.items():
        rec = script.recorded(wid)
        assert abs(entry["timm"] - rec) <= 0.3 and abs(entry["hub"] - rec) <= 0.3, (wid, entry)


def _store(tmp_path, text):
    path = tmp_path / "natural_pipelines.json"
    path.write_text(text)
    return path


def test_the_stored_figures_are_read_strictly(script, tmp_path):
    from agcnn_zoo.io.strict_json import JSONFileError
    assert script.load_results(tmp_path / "absent.json") == {}
    entry = '{"timm": 98.0, "hub": 98.0, "same_input": true}'
    ok = _store(tmp_path, f'{{"digits": 10000, "weights": {{"p4cnn_rotmnist": {entry}}}}}')
    assert script.load_results(ok) == {"p4cnn_rotmnist": {"timm": 98.0, "hub": 98.0,
                                                          "same_input": True}}
    twice = _store(tmp_path, f'{{"digits": 10000, "weights": {{"p4cnn_rotmnist": {entry}, '
                             f'"p4cnn_rotmnist": {entry}}}}}')
    with pytest.raises(JSONFileError, match="'p4cnn_rotmnist' appears twice"):
        script.load_results(twice)
    for bad in ('{"timm": "98", "hub": 98.0, "same_input": true}',
                '{"timm": 98.0, "hub": 198.0, "same_input": true}',
                '{"timm": 98.0, "hub": 98.0, "same_input": 1}',
                '{"timm": 98.0, "hub": 98.0}'):
        path = _store(tmp_path, f'{{"digits": 10000, "weights": {{"p4cnn_rotmnist": {bad}}}}}')
        with pytest.raises(JSONFileError, match="the entry of 'p4cnn_rotmnist'"):
            script.load_results(path)
    with pytest.raises(JSONFileError, match="expected"):
        script.load_results(_store(tmp_path, '{"digits": 400, "weights": {}}'))


def test_the_seeds_of_one_protocol_share_a_row_after_the_authors_weight(script):
    stored = {w: {"timm": 90.0 + i / 100, "hub": 90.0 + i / 100, "same_input": True}
              for i, w in enumerate(["p4cnn_rotmnist.rotgen12k_s2", "p4cnn_rotmnist",
                                     "p4cnn_rotmnist.rotgen12k_s0", "z2cnn_rotmnist",
                                     "p4cnn_rotmnist.zoo_rotgen_s1"])}
    stored["p4cnn_rotmnist.zoo_rotgen_s1"]["hub"] = 89.0  # a hub figure of its own is shown
    text = script.pipeline_table(stored, catalogue())
    assert text.startswith("Largest difference between a pipeline and the recorded accuracy")
    assert "(5 weights)" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    labels = [r.split(" | ")[0] for r in rows]
    assert labels == ["| `z2cnn_rotmnist`", "| `p4cnn_rotmnist`",
                      "| `p4cnn_rotmnist.rotgen12k_s0` / `_s2`", "| `p4cnn_rotmnist.zoo_rotgen_s1`"]
    assert rows[2].endswith("| 90.02 / 90.00 | the same as timm |")
    assert rows[3].endswith("| 90.04 | 89.00 |")


def test_write_readme_needs_its_markers_and_rewrites_only_between_them(script, tmp_path,
                                                                       capsys):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    assert script.main(["--no-measure", "--write-readme", str(readme)]) == 2
    assert "has no markers" in capsys.readouterr().err
    assert readme.read_text() == "no markers here\n"
    readme.write_text(f"before\n{script.BEGIN}\nold\n{script.END}\nafter\n")
    assert script.main(["--no-measure", "--write-readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"before\n{script.BEGIN}\nLargest difference") and \
        text.endswith(f"|\n{script.END}\nafter\n")
    with pytest.raises(SystemExit):
        script.main(["--no-measure"])
