"""Tests of ``GnerfReconstructionLib.install`` and of the extension's packaging (no Slicer): the
extension metadata and the files its CMake lists, the bundle and Python the module runs, what it installs."""

from __future__ import annotations

import json
import re
import sys

from types import SimpleNamespace

from GnerfReconstructionLib.install import (
    default_bundle_dir,
    default_python,
    dependency_requirements,
    install_requirements,
    sample_data_files,
)
from slicer_testing import BUNDLE, EXTENSION, MODULE_DIR, MODULE_NAME, ROOT, UI_FILE


def test_extension_metadata():
    cmake = (EXTENSION / "CMakeLists.txt").read_text()
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert f"set(EXTENSION_{key} " in cmake, key
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in cmake
    assert f"add_subdirectory({MODULE_NAME})" in cmake
    module_cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    for path in [*MODULE_DIR.glob(f"{MODULE_NAME}Lib/*.py"), UI_FILE, MODULE_DIR / "Resources" / "Icons" / f"{MODULE_NAME}.png"]:
        relative = path.relative_to(MODULE_DIR).as_posix().replace(MODULE_NAME, "${MODULE_NAME}")
        assert relative in module_cmake, f"{relative} is not listed in {MODULE_NAME}/CMakeLists.txt"
    catalog = json.loads((EXTENSION / "MonaiGnerf.json").read_text())
    assert catalog["build_dependencies"] == ["PyTorch"]
    assert catalog["build_subdirectory"] == "."  # the index builds the top-level CMakeLists of scm_url
    assert f'set(EXTENSION_CATEGORY "{catalog["category"]}")' in cmake
    requirements = (MODULE_DIR / "Resources" / "requirements.txt").read_text().splitlines()
    assert [r for r in requirements if r and not r.startswith("#")] == ["monai-gnerf>=0.1.0"]
    from PIL import Image

    with Image.open(MODULE_DIR / "Resources" / "Icons" / f"{MODULE_NAME}.png") as icon:
        assert icon.size == (128, 128)
    prefix = "https://raw.githubusercontent.com/monai-gnerf/monai-gnerf/main/"
    for url in re.findall(r'"(https://[^"\s]+)', cmake) + re.findall(r"(https://\S+?)[\s\"]", cmake):
        if url.startswith(prefix):  # a file of this repository: it must exist (screenshots, icon)
            assert (ROOT / url[len(prefix):]).is_file(), url


def test_dependencies_and_bundle_of_a_source_checkout():
    assert dependency_requirements() == [f"monai-gnerf @ {ROOT.as_uri()}"]  # a source checkout installs itself
    assert default_bundle_dir() == BUNDLE
    assert sample_data_files() == [("monai-gnerf example chest CT", ROOT / "monai_gnerf" / "data" / "example_chest_ct.nii.gz")]


def test_dependencies_install_through_pip_ensure_where_slicer_has_it_else_pip_install():
    calls = []
    modern = SimpleNamespace(pydeps=SimpleNamespace(pip_ensure=lambda reqs, requester: calls.append(("ensure", reqs, requester))))
    versions = install_requirements(modern, ["monai-gnerf>=0.1.0", f"monai-gnerf @ {ROOT.as_uri()}"])
    (kind, reqs, requester), = calls
    assert kind == "ensure" and requester == "MonaiGnerf" and [str(r) for r in reqs][0] == "monai-gnerf>=0.1.0"
    assert reqs[1].url == ROOT.as_uri()  # the checkout as a PEP 508 direct reference
    assert versions["torch"].startswith("2.") and set(versions) == {"monai-gnerf", "monai", "torch", "pytorch-ignite"}
    calls.clear()
    older = SimpleNamespace(util=SimpleNamespace(pip_install=lambda reqs: calls.append(("pip_install", reqs))))
    install_requirements(older, ["monai-gnerf>=0.1.0"])
    assert calls == [("pip_install", ["monai-gnerf>=0.1.0"])]


def test_outside_slicer_the_bundle_runs_with_this_python():
    assert default_python() == sys.executable  # inside Slicer: PythonSlicer beside it


def test_slicer_torch_requirement_is_the_package_range():
    """The module installs torch through the PyTorch extension before monai-gnerf exists in
    Slicer's Python, so it cannot read the range from the package: it must equal pyproject's."""
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_range = next(r for r in pyproject["project"]["dependencies"] if r.startswith("torch"))
    module = (MODULE_DIR / f"{MODULE_NAME}.py").read_text()
    assert re.search(r'^_TORCH_REQUIREMENT = "([^"]+)"', module, re.M)[1] == package_range.removeprefix("torch")
