"""The install is locked: every package pinned with a hash, torch alone from its own index, no extra index."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def locked(name: str) -> dict[str, str]:
    """Package name (normalised) -> pinned version, asserting every pin carries a sha256 hash."""
    pins = {}
    for entry in (ROOT / name).read_text().replace("\\\n", " ").splitlines():
        if not entry.strip() or entry.startswith("#"):
            continue
        assert "--hash=sha256:" in entry, f"{name}: {entry.split()[0]} has no hash"
        package, version = entry.split()[0].split("==")
        pins[re.sub(r"[-_.]+", "-", package).lower()] = version
    return pins


def test_every_dependency_is_locked_with_hashes():
    pins = locked("requirements.lock") | locked("requirements-torch.lock")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", requirement)[0]).lower()
        assert name in pins, f"{requirement} is not in the lock files"
    assert pins["torch"].startswith("2.13.0")


def test_the_ray_extra_is_locked_apart_from_the_default_install():
    pins = locked("requirements-ray.lock")
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    assert [f"ray=={pins['ray']}"] == extra
    assert not set(pins) & set(locked("requirements.lock")), "the Ray lock repeats a pin of the default install"
    makefile = (ROOT / "Makefile").read_text()
    assert "requirements-ray.lock" not in makefile[makefile.index("$(STAMP):") : makefile.index("touch $(STAMP)")]


def test_the_install_uses_the_locks_and_an_index_for_torch_only():
    makefile = (ROOT / "Makefile").read_text()
    stamp = makefile[makefile.index("$(STAMP):") : makefile.index("touch $(STAMP)")]
    assert "--require-hashes --no-deps" in stamp and "-r requirements.lock" in stamp
    assert "-r requirements-torch.lock" in stamp and "--index-url $(TORCH_INDEX_URL)" in stamp
    assert not re.search(r"pip install[^\n]*(?<!-r )(torch==|-e '\.\[dev\]')", stamp)  # nothing unlocked
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "PIP_EXTRA_INDEX_URL" not in dockerfile and "extra-index-url" not in dockerfile
    assert dockerfile.count("--require-hashes --no-deps") == 2


def test_the_vllm_service_shares_no_host_ipc():
    compose = (ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"^\s*ipc:\s*host", compose, re.M) and "shm_size" in compose
