"""What `pip install framebus` gives a producer: the SDK, the contract and the producer commands,
without torch, faust or boto3, and nothing generic in site-packages (everything under framebus/)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
HEAVY = ("torch", "diffusers", "transformers", "faust-streaming", "boto3", "fastapi", "aiokafka")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    shutil.rmtree(ROOT / "build", ignore_errors=True)  # setuptools' in-tree build output could mask a missing file
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, timeout=300)
    [built] = out.glob("framebus-*.whl")
    return built


def test_the_wheel_installs_everything_under_the_framebus_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"framebus"}
    for package in ("framebus/schemas/events.py", "framebus/services/common/processor.py",
                    "framebus/infra/kafka/pom.xml", "framebus/schemas/json/framebus.generation.requested.schema.json"):
        assert package in names


def test_the_base_requirements_are_light_and_each_extra_brings_its_part(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = Parser().parsestr(archive.read(metadata).decode()).get_all("Requires-Dist")
    base = [r for r in requires if "extra ==" not in r]
    assert not [r for r in base if r.split(">")[0].split("<")[0].split("[")[0].strip() in HEAVY], base
    worker = " ".join(r for r in requires if "extra == \"worker\"" in r)
    assert "torch" in worker and "diffusers" in worker and "torchao" in worker and "<" in worker.split("torchao")[1]
    assert any(r.startswith("faust-streaming") and "processors" in r for r in requires)


def test_a_fresh_venv_with_the_base_install_runs_the_producer_commands_without_torch(
        wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600)
    helped = subprocess.run([str(env_dir / "bin" / "framebus"), "submit", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert "--tier" in helped.stdout
    probe = ("import importlib.util, framebus\n"
             "from framebus.client import FramebusClient\n"
             "from framebus.schemas.events import GenerationRequest\n"
             "print([m for m in ('torch', 'faust', 'boto3', 'schemas', 'services', 'infra')"
             " if importlib.util.find_spec(m)])")
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"
