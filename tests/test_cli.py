"""The command line as a user meets it: its name, --version, unknown names, and a mirror that
holds only some weights (an air-gapped site) reported without failing."""
from __future__ import annotations

import subprocess
import sys

import pytest

from agcnn_zoo import __version__
from agcnn_zoo.__main__ import MODULE_COMMANDS, build_parser, main, program_name


@pytest.fixture
def empty_mirror(tmp_path, monkeypatch):
    """A mirror with no file at all: only the weights shipped in the package are available."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    monkeypatch.setenv("AGCNN_ZOO_MIRROR", str(mirror))
    monkeypatch.setenv("AGCNN_ZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("AGCNN_ZOO_MANIFEST", raising=False)
    return mirror


def test_help_names_the_program_the_user_typed():
    assert program_name("/venv/bin/agcnn-zoo") == "agcnn-zoo"
    assert program_name("/repo/agcnn_zoo/__main__.py") == "python -m agcnn_zoo"
    assert build_parser("agcnn-zoo").format_help().startswith("usage: agcnn-zoo ")
    assert build_parser("python -m agcnn_zoo").format_usage().startswith("usage: python -m agcnn_zoo ")


def test_help_imports_no_subcommand_module():
    """--help lists every subcommand without importing the modules of MODULE_COMMANDS (drawing
    imports torchvision); a parser built for one of them has its arguments."""
    code = ("import sys; from agcnn_zoo.__main__ import MODULE_COMMANDS, build_parser; "
            "text = build_parser('x', commands=[]).format_help(); "
            "print(all(n in text for n in MODULE_COMMANDS), "
            "[m for m, _ in MODULE_COMMANDS.values() if m in sys.modules], "
            "'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "[]", "False"]
    parser = build_parser("x", commands=["train"])
    args = parser.parse_args(["train", "p4cnn_rotmnist", "--epochs", "2"])
    assert args.epochs == 2 and callable(args.fn)
    assert set(MODULE_COMMANDS) == {"reproduce", "train", "attention"}


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"agcnn-zoo {__version__}"


def test_an_unknown_name_is_called_unknown_with_a_suggestion(capsys, empty_mirror):
    assert main(["download", "nonexistent", "p4cnn_rotmnst"]) == 1
    err = capsys.readouterr().err
    assert "nonexistent: unknown model or weight id" in err
    assert "p4cnn_rotmnst: unknown model or weight id; did you mean p4cnn_rotmnist" in err
    assert "no published weights" not in err


def test_a_known_model_without_weights_says_so(capsys, empty_mirror):
    assert main(["download", "resnet44_cifar"]) == 1
    assert "has no published weights" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["verify"], ["download", "--all", "--quiet"]])
def test_weights_the_mirror_lacks_are_one_line_each_and_not_a_failure(argv, capsys, empty_mirror):
    assert main(argv) == 0
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if "af_p4m_allcnnc_cifar" in line]
    assert lines == [f"{'af_p4m_allcnnc_cifar':28s} NOT AVAILABLE from the configured hosts "
                     f"(the mirror {empty_mirror} has no copy)"]
    assert "check the network" not in out + err and "FAIL" not in out + err
    assert "p4cnn_rotmnist" in out and "z2cnn_rotmnist" in out


def test_a_corrupt_weight_still_fails_verify(capsys, empty_mirror, tmp_path, monkeypatch):
    from agcnn_zoo.hub.hosts import package
    bad = tmp_path / "weights"
    bad.mkdir()
    (bad / "z2cnn_rotmnist.safetensors").write_bytes(
        (package.WEIGHTS_DIR / "p4cnn_rotmnist.safetensors").read_bytes()[:90368])
    monkeypatch.setattr(package, "WEIGHTS_DIR", bad)
    assert main(["verify", "z2cnn_rotmnist"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_progress_bars_only_on_a_terminal(monkeypatch):
    import io
    import sys
    from agcnn_zoo.io.env import show_progress

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not show_progress(True)
    monkeypatch.setattr(sys, "stderr", Tty())
    assert show_progress(True) and not show_progress(False)
