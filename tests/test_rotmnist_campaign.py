"""eval/rotmnist_campaign.py: the queue of the rot-MNIST seed campaign, a call with a time limit
(runs checkpoint and stop, and keep the device they started on), and the installation of runs
trained on transposed digits (folded into the natural frame, exactly)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agcnn_zoo.hub.convert import load_safetensors, safetensors_bytes
from agcnn_zoo.hub.hosts import package
from agcnn_zoo.hub.manifest import load_manifest
from agcnn_zoo.nn.orientation import transposed_state_dict
from agcnn_zoo.registry import get_entry

from conftest import DATA, REPO, shared

SCRIPT = REPO / "eval" / "rotmnist_campaign.py"


def _campaign():
    spec = importlib.util.spec_from_file_location("rotmnist_campaign", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shipping(tmp_path, records) -> dict:
    """The environment of a campaign whose checkout ships ``records`` (weight id -> record)
    and nothing else: a manifest of them in ``AGCNN_ZOO_MANIFEST``."""
    manifest = tmp_path / "shipped_manifest.json"
    manifest.write_text(json.dumps({"weights": records}))
    return {**os.environ, "AGCNN_ZOO_MANIFEST": str(manifest)}


def test_the_queue_is_every_rotmnist_name_three_seeds_cheapest_first(tmp_path):
    runs = tmp_path / "runs"
    (runs / "p4cnn_rotmnist.rotgen12k_s1").mkdir(parents=True)
    (runs / "p4cnn_rotmnist.rotgen12k_s1" / "record.json").write_text("{}")
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(runs), "--data-dir", "x",
                        "--dry-run"], capture_output=True, text=True, cwd=REPO,
                       env=_shipping(tmp_path, {}))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")[:-1]
    assert len(lines) == 23
    assert lines.pop().startswith("left on the CPU: 20 of 21 runs, about ")
    assert lines.pop() == "1 finished run(s) not in the manifest yet: --install adds them"
    assert lines[0] == "pending p4cnn_rotmnist.rotgen12k_s0"
    assert lines[1] == "done    p4cnn_rotmnist.rotgen12k_s1"
    assert lines[-1] == "pending a_p4cnn_rotmnist.rotgen12k_s2"
    names = [line.split()[1].split(".")[0] for line in lines]
    import agcnn_zoo as zoo
    assert sorted(set(names)) == zoo.list_models("*_rotmnist")
    command = _campaign().command("p4cnn_rotmnist", 2, tmp_path / "r", "DATA")
    for flag in ("--no-validation", "--resume"):
        assert flag in command
    assert command[command.index("--tag") + 1] == "rotgen12k_s2"
    assert command[command.index("--threads") + 1] == "1"


def test_the_queue_shows_how_far_a_started_run_is(tmp_path):
    run = tmp_path / "z2cnn_rotmnist.rotgen12k_s0"
    run.mkdir()
    epochs = [{"epoch": e, "lr": 0.001, "seconds": 3600.0 if e == 3 else 36.0} for e in (1, 2, 3, 4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in epochs)
                                       + '{"epoch": 5, "seco')  # a line being written
    (tmp_path / "z2cnn_rotmnist.rotgen12k_s0.log").write_text("campaign: device cpu\n")
    (tmp_path / "z2cnn_rotmnist.rotgen12k_s1.log").write_text("campaign: device cpu\n")
    (tmp_path / "z2cnn_rotmnist.rotgen12k_s1").mkdir()  # started, no epoch ended yet
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--data-dir", "x",
                        "--names", "z2cnn_rotmnist", "--dry-run"],
                       capture_output=True, text=True, cwd=REPO, env=_shipping(tmp_path, {}))
    assert p.returncode == 0, p.stderr
    # z2cnn's recipe has 300 epochs; the median pace ignores the one slow (paused) epoch
    assert p.stdout.split("\n")[:-1] == [
        "started z2cnn_rotmnist.rotgen12k_s0: epoch 4 of 300, about 3.0 h left at 36 s an epoch",
        "started z2cnn_rotmnist.rotgen12k_s1: no epoch ended yet",
        "pending z2cnn_rotmnist.rotgen12k_s2",
        # s0: 296 epochs at 36 s; s1 and s2: the recipe's 300 epochs at s0's pace; on two
        # lanes s2 follows s0, which frees its lane first
        "left on the CPU: 3 of 3 runs, about 9.0 h of one-thread training, about 6.0 h on 2 "
        "lane(s)"]


def test_the_hours_left_come_from_finished_runs_then_the_benchmark(tmp_path):
    finished = tmp_path / "p4cnn_rotmnist.rotgen12k_s0"
    finished.mkdir()
    (finished / "record.json").write_text(json.dumps(
        {"training": {"device": "cpu", "wall_time_s": 7200.0}}))
    (tmp_path / "coa_p4cnn_rotmnist.rotgen12k_s1.log").write_text("campaign: device cuda\n")
    queue = [("p4cnn_rotmnist", 0), ("p4cnn_rotmnist", 1), ("p4cnn_rotmnist", 2),
             ("coa_p4cnn_rotmnist", 0), ("coa_p4cnn_rotmnist", 1)]
    hours_left = _campaign().hours_left
    # p4cnn s1, s2 at s0's 2 h; coa s0 at the benchmark's 0.9 h, times 2.0 / 0.7 as p4cnn took
    # 2.0 h against its benchmark's 0.7; coa s1 stays on its GPU
    coa = 0.9 * 2.0 / 0.7
    runs, single, wall = hours_left(queue, tmp_path, lanes=2)
    assert runs == 3 and single == pytest.approx(4 + coa) and wall == pytest.approx(2 + coa)
    assert hours_left(queue, tmp_path, lanes=1)[2] == pytest.approx(4 + coa)
    assert hours_left(queue, tmp_path, lanes=3)[2] == pytest.approx(coa)
    # with no finished run, the benchmark as it is
    (finished / "record.json").unlink()
    assert hours_left(queue, tmp_path, lanes=1)[1] == pytest.approx(3 * 0.7 + 0.9)


def test_a_shipped_weight_is_never_trained_again_even_when_its_run_folder_is_gone(tmp_path):
    """A new machine keeps the repository, not the run folders: the runs whose weights the
    manifest ships are over (listed as shipped, out of the hours left, their records' wall
    times informing the estimate) and a training call starts none of them."""
    shipped = {f"p4cnn_rotmnist.rotgen12k_s{s}": {"training": {"device": "cpu",
                                                               "wall_time_s": 7200.0}}
               for s in (0, 1)}
    env = _shipping(tmp_path, shipped)
    runs = tmp_path / "runs"
    args = [sys.executable, str(SCRIPT), "--out", str(runs), "--data-dir", "x", "--names",
            "p4cnn_rotmnist"]
    p = subprocess.run(args + ["--dry-run"], capture_output=True, text=True, cwd=REPO, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[:-1] == [
        "shipped p4cnn_rotmnist.rotgen12k_s0", "shipped p4cnn_rotmnist.rotgen12k_s1",
        "pending p4cnn_rotmnist.rotgen12k_s2",
        # s2 at the median of the shipped runs' 2 h, though no run folder exists
        "left on the CPU: 1 of 3 runs, about 2.0 h of one-thread training, about 2.0 h on 2 "
        "lane(s)"]
    hours_left = _campaign().hours_left
    queue = [("p4cnn_rotmnist", s) for s in (0, 1, 2)]
    assert hours_left(queue, runs, 1, shipped) == (1, pytest.approx(2.0), pytest.approx(2.0))
    assert hours_left(queue, runs, 1)[0] == 3  # without the manifest every run is left
    # a training call: nothing to train, no run folder made, no data read ("x" does not exist)
    p = subprocess.run(args + ["--seeds", "0,1"], capture_output=True, text=True, cwd=REPO,
                       env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.endswith("campaign ended\n") and "started" not in p.stdout
    assert list(runs.iterdir()) == []


def test_a_lane_trains_with_this_checkouts_package_and_the_runs_own_thread_count(tmp_path,
                                                                                 monkeypatch):
    """``-m agcnn_zoo`` imports the package of the folder it starts in: a lane starts its run in
    the script's checkout (a frozen worktree trains with its own code), the data folder given
    relative to the caller's. A new run gets ``--threads``; a started run keeps the count its
    log's first line gives (its checkpoint resumes with that count only)."""
    campaign = _campaign()
    calls = []
    monkeypatch.setattr(campaign.subprocess, "call",
                        lambda cmd, **kw: calls.append((cmd, kw)) or 0)
    monkeypatch.setenv("AGCNN_ZOO_MANIFEST", _shipping(tmp_path, {})["AGCNN_ZOO_MANIFEST"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "p4cnn_rotmnist.rotgen12k_s1.log").write_text("campaign: device cpu\n")
    assert campaign.main(["--out", "runs", "--data-dir", "data", "--names", "p4cnn_rotmnist",
                          "--seeds", "1,2", "--lanes", "1", "--threads", "2"]) == 0
    (started, started_kw), (new, new_kw) = calls
    for cmd, kw in calls:
        assert kw["cwd"] == REPO and cmd[cmd.index("-m") + 1] == "agcnn_zoo"
        assert cmd[cmd.index("--data-dir") + 1] == str(tmp_path / "data")
    assert new[new.index("--out") + 1] == str(tmp_path / "runs" / "p4cnn_rotmnist.rotgen12k_s2")
    assert new[new.index("--threads") + 1] == new_kw["env"]["OMP_NUM_THREADS"] == "2"
    assert started[started.index("--threads") + 1] == started_kw["env"]["OMP_NUM_THREADS"] == "1"
    log = (tmp_path / "runs" / "p4cnn_rotmnist.rotgen12k_s2.log").read_text()
    assert log == "campaign: device cpu, threads 2\n"
    assert campaign.started_with(tmp_path / "runs" / "p4cnn_rotmnist.rotgen12k_s2.log") == ("cpu", 2)
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", "runs", "--data-dir", "data",
                        "--threads", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and "--threads must be at least 1" in p.stderr


def test_install_measures_only_the_weights_not_yet_measured_on_mnist_rot_aux():
    campaign = _campaign()
    manifest = load_manifest()
    measured = "p4cnn_rotmnist.rotgen12k_s0"
    assert campaign.unmeasured(manifest, [measured]) == []
    manifest["weights"][measured]["accuracy"]["measured"] = [
        dict(m, dataset="mnist-rot") for m in manifest["weights"][measured]["accuracy"]["measured"]]
    del manifest["weights"]["p4cnn_rotmnist.rotgen12k_s1"]["accuracy"]["measured"]
    assert campaign.unmeasured(manifest, [measured, "p4cnn_rotmnist.rotgen12k_s1",
                                          "p4cnn_rotmnist.rotgen12k_s2"]) == [
        measured, "p4cnn_rotmnist.rotgen12k_s1"]


def test_install_measures_then_tabulates_then_runs_the_new_weights_through_the_pipelines(
        monkeypatch):
    campaign = _campaign()
    new = "asp_p4cnn_rotmnist.rotgen12k_s9"  # no such weight was ever put through the pipelines
    assert campaign.through_no_pipeline(["p4cnn_rotmnist.rotgen12k_s0", new]) == [new]
    calls = []

    def run(cmd, cwd):
        calls.append(cmd[1:])
        assert cwd == REPO
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(campaign.subprocess, "run", run)
    campaign.measure_and_tabulate([new], "data", [new])
    data = str(Path("data").resolve())  # the steps run in the checkout: the folder made absolute
    assert calls[0][calls[0].index("--data-dir") + 1] == data
    assert [c[:4] for c in calls] == [["-m", "agcnn_zoo", "reproduce", "--models"],
                                      ["-m", "agcnn_zoo", "results", "--write-readme"],
                                      ["eval/natural_pipelines.py", "--write-readme", "README.md",
                                       "--data-dir"]]
    assert calls[2][3:] == ["--data-dir", data, "--models", new]
    calls.clear()
    campaign.measure_and_tabulate([], "data")  # all measured: the tables are still rewritten
    assert calls == [["-m", "agcnn_zoo", "results", "--write-readme", "README.md"],
                     ["eval/natural_pipelines.py", "--write-readme", "README.md", "--no-measure"]]
    monkeypatch.setattr(campaign.subprocess, "run",
                        lambda cmd, cwd: subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(SystemExit, match="weights are installed: fix the cause"):
        campaign.measure_and_tabulate([], "data")


def test_install_refuses_a_run_with_its_reason_and_hint_not_a_traceback(tmp_path):
    """A real limited run (a smoke test, never a weight of a manifest) among the finished runs:
    --install says which run it did not install, why and what to do, changes nothing, exit 1."""
    shared(DATA / "mnist")
    runs = tmp_path / "runs"
    wid = "p4cnn_rotmnist.rotgen12k_s7"
    p = subprocess.run([sys.executable, "-m", "agcnn_zoo", "train", "p4cnn_rotmnist", "--dataset",
                        "mnist-rot-gen", "--no-validation", "--seed", "7", "--tag", "rotgen12k_s7",
                        "--threads", "1", "--epochs", "1", "--limit-train", "256", "--limit-test",
                        "100", "--no-progress", "--data-dir", str(DATA), "--out", str(runs / wid)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    env = _shipping(tmp_path, {})
    manifest = Path(env["AGCNN_ZOO_MANIFEST"]).read_bytes()
    weights = sorted(package.WEIGHTS_DIR.iterdir())
    p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(runs), "--data-dir", str(DATA),
                        "--install", "--names", "p4cnn_rotmnist", "--seeds", "7"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"not installed {wid}: {wid}: a limited run (--limit-*) is a smoke test" in p.stderr
    assert "hint: train without --limit-*" in p.stderr and "Traceback" not in p.stderr
    assert Path(env["AGCNN_ZOO_MANIFEST"]).read_bytes() == manifest
    assert sorted(package.WEIGHTS_DIR.iterdir()) == weights


def test_the_command_of_a_gpu_lane_and_of_a_cpu_lane(tmp_path):
    campaign = _campaign()
    cpu = campaign.command("a_p4cnn_rotmnist", 0, tmp_path / "r", "DATA")
    assert cpu[:3] == ["nice", "-n", "10"] and cpu[cpu.index("--device") + 1] == "cpu"
    assert "--data-on-device" not in cpu and "--time-limit" not in cpu
    gpu = campaign.command("a_p4cnn_rotmnist", 0, tmp_path / "r", "DATA", "cuda", 120.7)
    assert gpu[0] == sys.executable and gpu[gpu.index("--device") + 1] == "cuda"
    assert "--data-on-device" in gpu and gpu[gpu.index("--time-limit") + 1] == "120"
    assert campaign.command("p4cnn_rotmnist", 0, tmp_path, "D", "cpu", 0.2)[-1] == "1"


def test_a_run_keeps_the_device_and_threads_it_started_with(tmp_path):
    campaign = _campaign()
    log = tmp_path / "x.log"
    assert campaign.started_on(log) is None and campaign.started_with(log) is None
    log.write_text("p4cnn_rotmnist: epoch 1 ...\n")  # a log from before the device line: CPU
    assert campaign.started_on(log) == "cpu" and campaign.started_with(log) == ("cpu", 1)
    log.write_text("campaign: device cuda:1\nepoch 1\n")  # from before the thread count
    assert campaign.started_on(log) == "cuda:1" and campaign.started_with(log) == ("cuda:1", 1)
    log.write_text("campaign: device cpu, threads 2\nepoch 1\n")
    assert campaign.started_on(log) == "cpu" and campaign.started_with(log) == ("cpu", 2)


def test_a_call_with_a_time_limit_checkpoints_its_run_and_the_gpu_passes_it_by(tmp_path):
    """A real run of the campaign (p4cnn, seed 0, on the MNIST training digits) with a budget of
    a few seconds: the run checkpoints and stops, the campaign says how to continue (exit 3);
    a GPU call leaves the CPU's run alone (no GPU needed to pass it by)."""
    shared(DATA / "mnist")
    env = _shipping(tmp_path, {})  # seed 0 ships: a campaign with nothing shipped trains it
    runs = tmp_path / "runs"
    args = [sys.executable, str(SCRIPT), "--out", str(runs), "--data-dir", str(DATA),
            "--names", "p4cnn_rotmnist", "--seeds", "0", "--lanes", "1"]
    p = subprocess.run(args + ["--time-limit", "4"], capture_output=True, text=True, cwd=REPO,
                       env=env, timeout=300)  # without the limit the run would train for an hour
    run = runs / "p4cnn_rotmnist.rotgen12k_s0"
    log = (runs / "p4cnn_rotmnist.rotgen12k_s0.log").read_text()
    assert p.returncode == 3, p.stdout + p.stderr + log
    assert "stopped at the time limit" in p.stdout and "run the same command again" in p.stdout
    assert log.startswith("campaign: device cpu, threads 1\n")
    assert (run / "checkpoint.safetensors").is_file() and not (run / "record.json").exists()
    p = subprocess.run(args + ["--device", "cuda"], capture_output=True, text=True, cwd=REPO,
                       env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "passed by p4cnn_rotmnist.rotgen12k_s0: it started on cpu" in p.stdout
    if not torch.cuda.is_available():  # a run that has not started: refused before any lane
        other = tmp_path / "other"
        p = subprocess.run([sys.executable, str(SCRIPT), "--out", str(other), "--data-dir",
                            str(DATA), "--names", "p4cnn_rotmnist", "--device", "cuda"],
                           capture_output=True, text=True, cwd=REPO, env=env)
        assert p.returncode == 2 and "CUDA is not available on this machine" in p.stderr
        assert list(other.iterdir()) == []
    p = subprocess.run(args + ["--device", "tpu"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2 and "--device must be cpu, cuda or cuda:N" in p.stderr


def test_a_run_of_the_transposed_frame_is_staged_folded(tmp_path, monkeypatch):
    """A run as agcnn-zoo trained it before the weights took natural digits: its weight is the
    package's trained p4cnn weight moved back into the transposed frame. Staging folds it again:
    the bytes of the package's file come back, the record says so, and it installs."""
    wid = "p4cnn_rotmnist.zoo_rotgen_s0"
    rec = load_manifest()["weights"][wid]
    tensors, meta = load_safetensors(package.WEIGHTS_DIR / rec["file"])
    model = get_entry("p4cnn_rotmnist").fn()
    old_frame = transposed_state_dict(model, tensors)
    run = tmp_path / "run"
    run.mkdir()
    old_meta = {k: v for k, v in meta.items() if k != "agcnn_zoo.frame"}
    (run / rec["file"]).write_bytes(safetensors_bytes(old_frame, old_meta))
    old_rec = json.loads(json.dumps(rec))
    old_rec["preprocessing"]["orientation"] = "transposed w.r.t. MNIST"
    (run / "record.json").write_text(json.dumps(old_rec))
    campaign = _campaign()
    assert campaign.trained_transposed(run / "record.json")
    staged = campaign.natural_copy(run / "record.json", tmp_path / "staged")
    assert not campaign.trained_transposed(staged)
    new = json.loads(staged.read_text())
    weight = staged.parent / rec["file"]
    assert weight.read_bytes() == (package.WEIGHTS_DIR / rec["file"]).read_bytes()
    assert (new["sha256"], new["size"]) == (rec["sha256"], rec["size"])
    assert "folded" in new["origin"]["frame"] and "orientation" not in new["preprocessing"]
    assert (run / rec["file"]).read_bytes() != weight.read_bytes()  # the run is left alone
    # installed as the campaign does (into the package), here into copies
    from agcnn_zoo.train import install
    from agcnn_zoo.train.install import InstallError
    manifest = tmp_path / "manifest.json"
    manifest.write_text((REPO / "weights_manifest.json").read_text())
    monkeypatch.setattr(package, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(InstallError, match="trained on transposed digits") as refused:
        install(run / "record.json", manifest=manifest, package=True)  # unfolded: refused
    assert "fold the transposition in first" in str(refused.value)
    assert install(staged, manifest=manifest, package=True) == wid
    got, _ = load_safetensors(tmp_path / "weights" / rec["file"])
    assert all(torch.equal(got[k], v) for k, v in tensors.items())
    assert json.loads(manifest.read_text())["weights"][wid]["sha256"] == rec["sha256"]


def test_a_lane_line_is_written_whole_and_stamped(monkeypatch):
    """Lanes are threads: a line written in two pieces (text, then newline, as print does) can
    be run together with another lane's line; each line must reach stdout in one write."""
    writes = []

    class Recorder:
        def write(self, text):
            writes.append(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Recorder())
    campaign = _campaign()
    campaign.say("lane 0: p4cnn_rotmnist.rotgen12k_s0 started")
    campaign.say("lane 1: p4cnn_rotmnist.rotgen12k_s1 ended rc 0 after 0.70 h")
    assert len(writes) == 2 and all(w.endswith("\n") and w.count("\n") == 1 for w in writes)
    stamp, text = writes[0].rstrip("\n").split(" ", 1)
    assert text == "lane 0: p4cnn_rotmnist.rotgen12k_s0 started"
    assert time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
