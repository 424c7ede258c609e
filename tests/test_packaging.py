"""A non-editable install carries the bundled configs: `--config cpu-tiny` and the demo pipeline file are found
through importlib.resources from site-packages, outside the source tree. Offline: no dependency is installed
(the project venv's packages are made visible to the new venv), nothing is built in isolation."""

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = textwrap.dedent("""
    import sys
    from importlib import resources
    from pathlib import Path

    import configs
    from training.config import find_config, load_config

    site = Path(sys.argv[1]).resolve()
    for module in (configs, sys.modules["training.config"]):
        assert site in Path(module.__file__).resolve().parents, module.__file__
    tiny = find_config("cpu-tiny")
    assert site in tiny.resolve().parents and tiny.name == "cpu-tiny.yaml", tiny
    assert load_config("cpu-tiny").model.kwargs == {"depth": 4}
    assert load_config("vitb16").model.name == "vit_base_patch16_dinov3"  # its base: chain inside the wheel
    demo = configs.path("pipelines/demo.yaml")
    assert site in demo.resolve().parents and "pretrain:" in demo.read_text(), demo
    assert resources.files("configs").joinpath("pretrain/cpu-tiny.yaml").is_file()
    print("ok")
""")


def _copy_sources(dest: Path) -> Path:
    """The files a build reads (setuptools writes build/ and *.egg-info beside them: not in the working tree)."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for pkg in sorted(p for p in REPO.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"):
        shutil.copytree(pkg, dest / pkg.name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.mark.slow
def test_non_editable_install_finds_the_bundled_configs(tmp_path):
    src = _copy_sources(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The project venv's dependencies (and pip, setuptools), without its editable finder: a .pth line adds the folder
    # to sys.path, but the .pth files inside it are not run.
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")}
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "--disable-pip-version-check", str(src)], check=True, timeout=120, env=env, cwd=tmp_path)
    out = subprocess.run([python, "-c", CHECK, str(site)], capture_output=True, text=True, timeout=60, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
