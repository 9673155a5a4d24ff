"""Packaging: the repository's folders install under the one `clipvis` namespace, never as top-level packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
FOLDER_OF = {"clipvis": "clipvis", "clipvis.cli": "clipvis_cli", "clipvis.model": "model", "clipvis.weights": "weights"}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_source_package_is_listed_and_mapped() -> None:
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    assert setuptools_cfg["package-dir"] == FOLDER_OF
    expected = set()
    for name, folder in FOLDER_OF.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            expected.add(".".join([name, *relative.parts]))
    assert set(setuptools_cfg["packages"]) == expected


def test_the_package_says_it_is_typed() -> None:
    """PEP 561: without a py.typed marker, type checkers ignore the hints of an installed clipvis."""
    assert (ROOT / "clipvis" / "py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["clipvis"]


def _user_project(tmp_path: Path) -> Path:
    """A user's project folder with its own `model.py` and `weights.py`, as many projects have."""
    project = tmp_path / "user_project"
    project.mkdir()
    (project / "model.py").write_text("WHO = 'the user'\n")
    (project / "weights.py").write_text("WHO = 'the user'\n")
    return project


CHECK_IMPORTS = textwrap.dedent(
    """
    import clipvis, model, weights
    from clipvis import ClipVis, VideoPredictor, create_model, load_model, __version__
    import clipvis.cli.app, clipvis.model, clipvis.weights
    assert model.WHO == weights.WHO == 'the user'
    assert ClipVis.__module__ == 'clipvis.model.clipvis', ClipVis.__module__
    print(clipvis.model.__file__)
    """
)


def test_import_clipvis_from_a_folder_with_its_own_model_module(tmp_path: Path) -> None:
    """The installed package (editable or not) wins over a user's `model.py`, and leaves it importable."""
    project = _user_project(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


LAZY_SUBPACKAGES = textwrap.dedent(
    """
    import sys, clipvis, clipvis.cli
    assert 'torch' not in sys.modules and 'clipvis.model' not in sys.modules and 'clipvis.cli.memory' not in sys.modules
    assert {'cli', 'model', 'weights'} <= set(dir(clipvis)) and {'memory', 'app', 'writers'} <= set(dir(clipvis.cli))
    assert clipvis.weights.list_pretrained() and clipvis.cli.memory.HeapTrimmer and clipvis.cli.writers.__path__
    assert clipvis.model.SetCriterion.__module__ == 'clipvis.model.criterion'
    for package, name in ((clipvis, 'no_such_thing'), (clipvis.cli, 'no_such_module'), (clipvis.cli, 'no.such')):
        try:
            getattr(package, name)
        except AttributeError as error:
            assert name in str(error), error
        else:
            raise AssertionError(name)
    print('ok')
    """
)


def test_subpackages_and_cli_modules_load_on_first_attribute_access() -> None:
    """README's `clipvis.model.SetCriterion()` and `clipvis.cli.memory.HeapTrimmer()` after `import clipvis` (was
    AttributeError), while `import clipvis` and `import clipvis.cli` alone still import neither them nor torch."""
    done = subprocess.run([sys.executable, "-c", LAZY_SUBPACKAGES], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_python_m_clipvis_runs_in_the_clone_root_without_an_editable_install() -> None:
    """`pip install .` then `python -m clipvis` (or `torchrun -m clipvis`) in the clone's root: the clone's clipvis/
    comes first on sys.path and holds no cli/ inside; it failed with ModuleNotFoundError: clipvis.cli. Run with -S
    so no editable install's finder helps (the dependencies come from site-packages on PYTHONPATH)."""
    import site

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *site.getsitepackages()])}
    done = subprocess.run([sys.executable, "-S", "-m", "clipvis", "--version"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("clipvis "), done.stderr
    probe = "import clipvis.cli.app, clipvis.model, clipvis.weights; print(clipvis.cli.app.__file__)"
    done = subprocess.run([sys.executable, "-S", "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == str(ROOT / "clipvis_cli" / "app.py"), done.stderr


def _checkout_files() -> list[str]:
    """The checkout's files as a fresh clone of its working tree has them (tracked, and new ones git does not ignore;
    none deleted): no build/ folder, whose stale build/lib setuptools copies into every wheel (setuptools issue
    #1871: a module deleted or moved since an earlier build shipped again). Skips outside a git checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, check=True, timeout=60).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"the wheel is built from the files git tracks, and {ROOT} is no git checkout ({error})")
    return sorted(name for name in set(listed.split("\0")) if name and (ROOT / name).is_file())


def _package_folder(package: str) -> PurePosixPath:
    """The repository folder of an installed package (``clipvis.cli.train`` -> ``clipvis_cli/train``)."""
    root = max((name for name in FOLDER_OF if package == name or package.startswith(f"{name}.")), key=len)
    return PurePosixPath(FOLDER_OF[root], *package.split(".")[len(root.split(".")):])


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a clean copy of the checkout's files (``_checkout_files``), built outside the checkout."""
    source = tmp_path_factory.mktemp("source")
    for name in _checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0 and "No module named" in done.stderr:
        pytest.skip(f"cannot build a wheel without build isolation here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("clipvis-*.whl")
    return wheel


def test_the_wheel_holds_exactly_the_package_sources(built_wheel: Path) -> None:
    """Each source module of clipvis/, clipvis_cli/, model/ and weights/ (and the declared package data) is one
    file of the wheel's clipvis/, and nothing else is: a wheel built where a build/ folder was left from an earlier
    build shipped the modules deleted or moved since (setuptools copies build/lib whole)."""
    data_patterns = [(_package_folder(package) / pattern).as_posix()
                     for package, patterns in _pyproject()["tool"]["setuptools"]["package-data"].items()
                     for pattern in patterns]
    package_of = {folder: package for package, folder in FOLDER_OF.items()}
    expected = set()
    for name in _checkout_files():
        folder, *rest = PurePosixPath(name).parts
        if folder in package_of and (name.endswith(".py") or any(fnmatch(name, p) for p in data_patterns)):
            expected.add("/".join([*package_of[folder].split("."), *rest]))
    with zipfile.ZipFile(built_wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("clipvis/")}
    assert "clipvis/cli/app.py" in expected and "clipvis/py.typed" in expected
    assert shipped == expected


def test_wheel_has_one_top_level_package(built_wheel: Path) -> None:
    with zipfile.ZipFile(built_wheel) as archive:
        names = archive.namelist()
    top_level = {name.split("/")[0] for name in names}
    dist_info = {name for name in top_level if name.endswith(".dist-info")}
    assert top_level - dist_info == {"clipvis"}
    for module in ("__init__.py", "py.typed", "cli/app.py", "model/clipvis.py", "weights/registry.py"):
        assert f"clipvis/{module}" in names
    shipped_configs = sorted(p.name for p in (ROOT / "clipvis_cli" / "train" / "configs").glob("*.yaml"))
    assert shipped_configs and all(f"clipvis/cli/train/configs/{name}" in names for name in shipped_configs)
    (info,) = dist_info
    with zipfile.ZipFile(built_wheel) as archive:
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        top_level_txt = archive.read(f"{info}/top_level.txt").decode() if f"{info}/top_level.txt" in names else ""
    assert "clipvis = clipvis.cli.launcher:main" in entry_points
    assert top_level_txt.split() in ([], ["clipvis"])


def test_built_wheel_imports_beside_a_users_model_module(built_wheel: Path, tmp_path: Path) -> None:
    """The wheel's files, first on the path, import as `clipvis.*` and never shadow the user's `model.py`."""
    site = tmp_path / "site"
    with zipfile.ZipFile(built_wheel) as archive:
        archive.extractall(site)
    project = _user_project(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS], cwd=project, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(site)
