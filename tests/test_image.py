"""infra/docker/Dockerfile, checked without a Docker engine (there is none here, nor in CI).

A small parser reads the Dockerfile (stages, COPY, RUN, ENV, USER, VOLUME, WORKDIR, ...). The
static tests hold it to what the project needs: every directory setup.py maps into the package is
copied, both targets exist, the models volume holds wan-shapes, the user is not root. The last test
replays the Dockerfile's COPY lines from the build context into a temporary root, builds the wheel
from there alone, installs it into a fresh venv and runs every service command from it, so a path
the image forgets to copy fails here rather than at `docker compose up`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from unittest import mock

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from framebus.config import ClientSettings
from framebus.services.cli.main import PROCESSORS
from framebus.services.common.settings import Settings

ROOT = Path(__file__).parents[1]
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
TARGETS = ("cpu", "cuda")
FLAGGED = {"FROM", "COPY", "ADD", "RUN", "HEALTHCHECK"}  # instructions that take --flags before their arguments
# The long-running commands compose.yaml runs, and `up`, its provisioner.
SERVICE_COMMANDS = ("up", "gateway", "worker", *PROCESSORS)


# --- a Dockerfile parser: enough of the format for the checks below ---------------------------------

@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    flags: dict[str, str]  # --from=builder -> {"from": "builder"}; a bare --link -> {"link": ""}
    args: str  # the rest, continuation lines joined
    line: int

    def words(self) -> list[str]:
        """The arguments in exec (JSON) form or as shell words."""
        return json.loads(self.args) if self.args.startswith("[") else shlex.split(self.args)


@dataclass
class Stage:
    name: str
    base: str  # an image reference with the global ARGs substituted, or an earlier stage's name
    instructions: list[Instruction] = field(default_factory=list)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction) with continuations joined and comment lines dropped, as Docker does."""
    joined, start, parts = [], 0, []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments (parser directives too) and blank lines, even inside a continuation
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        joined.append((start, " ".join(parts)))
        parts = []
    assert not parts, f"line {start}: a continuation runs off the end of the file"
    return joined


def substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), value)


def parse_dockerfile(text: str) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, logical in logical_lines(text):
        keyword, _, rest = logical.partition(" ")
        keyword, rest, flags = keyword.upper(), rest.strip(), {}
        while keyword in FLAGGED and rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name], rest = value, rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            global_args[name] = default
        elif keyword == "FROM":
            words = substitute(rest, global_args).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, words[0]))
        else:
            assert stages, f"line {line}: {keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, flags, rest, line))
    return stages


def env_assignments(instruction: Instruction) -> dict[str, str]:
    words = shlex.split(instruction.args)
    if "=" not in words[0]:  # the legacy form: ENV KEY value with spaces
        return {words[0]: instruction.args.split(None, 1)[1]}
    return dict(word.split("=", 1) for word in words)


@dataclass
class Image:
    """What a target ends up with, its base stages' settings included."""

    chain: list[Stage]  # base stage first
    env: dict[str, str]
    user: str | None
    workdir: str
    volumes: list[str]
    entrypoint: list[str] | None
    labels: dict[str, str]

    @property
    def instructions(self) -> list[Instruction]:
        return [i for stage in self.chain for i in stage.instructions]

    def runs(self) -> str:
        return "\n".join(i.args for i in self.instructions if i.keyword == "RUN")


def image(stages: list[Stage], target: str) -> Image:
    by_name = {stage.name: stage for stage in stages}
    chain = [by_name[target]]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    built = Image(chain, {}, None, "/", [], None, {})
    for instruction in built.instructions:
        if instruction.keyword == "ENV":
            built.env.update(env_assignments(instruction))
        elif instruction.keyword == "USER":
            built.user = instruction.args
        elif instruction.keyword == "WORKDIR":
            built.workdir = str(PurePosixPath(built.workdir, instruction.args))
        elif instruction.keyword == "VOLUME":
            built.volumes += instruction.words()
        elif instruction.keyword == "ENTRYPOINT":
            built.entrypoint = instruction.words()
        elif instruction.keyword == "LABEL":
            built.labels.update(env_assignments(instruction))
    return built


@dataclass(frozen=True)
class ContextCopy:
    sources: list[str]  # relative to the build context; may hold wildcards
    dest: str  # absolute, in the image
    instruction: Instruction


def context_copies(stages: list[Stage], target: str) -> list[ContextCopy]:
    """COPY and ADD lines that read the build context (not another stage), in the target and its bases."""
    copies, workdir = [], "/"
    for instruction in image(stages, target).instructions:
        if instruction.keyword == "WORKDIR":
            workdir = str(PurePosixPath(workdir, instruction.args))
        elif instruction.keyword in ("COPY", "ADD") and "from" not in instruction.flags:
            *sources, dest = instruction.words()
            absolute = str(PurePosixPath(workdir, dest)) + ("/" if dest.endswith("/") else "")
            copies.append(ContextCopy(sources, absolute, instruction))
    return copies


# --- the build context: .dockerignore, and COPY replayed into a directory -------------------------

def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.strip().strip("/") for line in lines if line.strip() and not line.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's matching: `*` stays within one path element, `**` crosses them."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out + r"\Z")


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `relative` (or a directory above it) out of the context."""
    parts = PurePosixPath(relative).parts
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:  # the last pattern that matches decides; `!` lets a path back in
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!"))
        if any(regex.match(prefix) for prefix in prefixes):
            verdict = not negated
    return verdict


def context_matches(source: str, patterns: list[str]) -> list[Path]:
    hits = [Path(hit) for hit in sorted(glob.glob(str(ROOT / source)))]
    return [hit for hit in hits if not ignored(hit.relative_to(ROOT).as_posix(), patterns)]


def replay_copies(copies: list[ContextCopy], root: Path) -> None:
    """COPY's semantics, into `root` standing for the image's /: a directory source copies its contents."""
    patterns = dockerignore_patterns()
    for copy in copies:
        dest = root / copy.dest.lstrip("/")
        sources = [hit for source in copy.sources for hit in context_matches(source, patterns)]
        into_directory = copy.dest.endswith("/") or len(sources) > 1
        for source in sources:
            if source.is_dir():
                def skip(directory: str, names: list[str]) -> list[str]:
                    base = Path(directory).relative_to(ROOT)
                    return [name for name in names if ignored((base / name).as_posix(), patterns)]
                shutil.copytree(source, dest, ignore=skip, dirs_exist_ok=True)
            else:
                target = dest / source.name if into_directory else dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


# --- what the project needs, read from its own files ----------------------------------------------

def package_directories() -> set[str]:
    """The top-level directories setup.py maps into the framebus package, asked of setup.py itself."""
    captured: dict = {}
    with contextlib.chdir(ROOT), mock.patch("setuptools.setup", lambda **kwargs: captured.update(kwargs)):
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    directories = {PurePosixPath(path).parts[0] for path in captured["package_dir"].values()}
    for package in captured["packages"]:  # every package lies under one of them
        assert any(package == name or package.startswith(name + ".") for name in captured["package_dir"]), package
    return directories


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def wheel_stage(stages: list[Stage]) -> Stage:
    [stage] = [s for s in stages if any(i.keyword == "RUN" and "pip wheel" in i.args for i in s.instructions)]
    return stage


def copied_paths(copies: list[ContextCopy]) -> set[str]:
    return {str(PurePosixPath(source)) for copy in copies for source in copy.sources}


# --- the parser itself, so that the checks below cannot pass on a misread file -------------------

def test_the_parser_reads_stages_continuations_flags_and_both_forms() -> None:
    parsed = parse_dockerfile("# syntax=docker/dockerfile:1\n"
                              "ARG BASE=debian:12\n"
                              "FROM ${BASE} AS one\n"
                              "RUN apt-get update \\\n"
                              "# a comment inside the continuation\n"
                              " && apt-get install -y ffmpeg\n"
                              "WORKDIR /src\n"
                              "COPY a b ./\n"
                              "ENV A=1 B=\"two words\"\n"
                              "FROM one AS two\n"
                              "COPY --from=one --chown=x:y /src /dst\n"
                              "ENV C 3 4\n"
                              "VOLUME [\"/models\"]\n"
                              "USER app\n"
                              "ENTRYPOINT [\"framebus\"]\n")
    assert [(s.name, s.base) for s in parsed] == [("one", "debian:12"), ("two", "one")]
    run = parsed[0].instructions[0]
    assert (run.keyword, run.args, run.line) == ("RUN", "apt-get update && apt-get install -y ffmpeg", 4)
    assert parsed[1].instructions[0].flags == {"from": "one", "chown": "x:y"}
    two = image(parsed, "two")
    assert two.env == {"A": "1", "B": "two words", "C": "3 4"}
    assert (two.user, two.workdir, two.volumes, two.entrypoint) == ("app", "/src", ["/models"], ["framebus"])
    [copy] = context_copies(parsed, "two")
    assert (copy.sources, copy.dest) == (["a", "b"], "/src/")
    assert ignored("services/cli/__pycache__/x.pyc", ["**/__pycache__"]) and ignored("build/lib/x", ["build"])
    assert not ignored("framebus/build.py", ["build"]) and not ignored("a/x.egg-info", ["*.egg-info"])


# --- static checks --------------------------------------------------------------------------------

def test_both_targets_exist_on_pinned_bases(stages: list[Stage]) -> None:
    names = {stage.name for stage in stages}
    assert set(TARGETS) <= names
    for stage in stages:
        if stage.base not in names:
            repository, _, tag = stage.base.rpartition(":")
            assert repository and tag and tag != "latest" and "$" not in stage.base, f"{stage.name}: {stage.base!r} is not pinned"
    assert image(stages, "cpu").chain[0].base.startswith("python:3.11-slim-bookworm")
    cuda_base = image(stages, "cuda").chain[0].base
    assert cuda_base.startswith("nvidia/cuda:") and cuda_base.endswith("-ubuntu22.04"), cuda_base


def test_every_path_copied_from_the_build_context_exists_and_is_not_dockerignored(stages: list[Stage]) -> None:
    patterns = dockerignore_patterns()
    assert {".venv", "build"} <= set(patterns), "the context must leave out the local venv and build output"
    for stage in stages:
        for copy in context_copies(stages, stage.name):
            for source in copy.sources:
                assert context_matches(source, patterns), f"line {copy.instruction.line}: {source} is not in the context"


def test_the_wheel_is_built_from_every_directory_setup_py_maps_into_the_package(stages: list[Stage]) -> None:
    builder = wheel_stage(stages)
    copied = copied_paths(context_copies(stages, builder.name))
    directories = package_directories()
    assert {"framebus", "schemas", "services", "infra"} <= directories  # the layout the README describes
    assert directories <= copied, f"not copied into {builder.name}: {sorted(directories - copied)}"
    assert {"pyproject.toml", "setup.py", pyproject()["project"]["readme"]} <= copied


def test_each_target_ships_the_default_model_in_the_models_volume(stages: list[Stage]) -> None:
    model = str(ClientSettings().default_model)
    for target in TARGETS:
        built = image(stages, target)
        models_dir = built.env.get("FRAMEBUS_MODELS_DIR")
        assert models_dir and models_dir in built.volumes, f"{target}: FRAMEBUS_MODELS_DIR must be a VOLUME"
        volume_line = min(i.line for i in built.instructions if i.keyword == "VOLUME")
        [copy] = [c for c in context_copies(stages, target) if c.sources == [f"models/{model}"]]
        assert copy.dest.rstrip("/") == f"{models_dir}/{model}"
        assert copy.instruction.line < volume_line, f"{target}: content copied after VOLUME is not the volume's default"
        assert copy.instruction.flags.get("chown", "").split(":")[0] == built.user


def test_each_target_runs_the_cli_as_a_non_root_user_with_a_writable_home(stages: list[Stage]) -> None:
    for target in TARGETS:
        built = image(stages, target)
        assert built.user and built.user.split(":")[0] not in ("root", "0"), f"{target} runs as root"
        [useradd] = [shlex.split(cmd) for cmd in re.split(r"&&|;", built.runs()) if cmd.strip().startswith("useradd")]
        assert useradd[-1] == built.user
        assert "--create-home" in useradd and int(useradd[useradd.index("--uid") + 1]) >= 1000
        home = useradd[useradd.index("--home-dir") + 1]
        assert built.workdir == home  # settings keep state and caches under $HOME
        assert built.entrypoint == ["framebus"]
        [venv] = [i.words()[-1] for i in built.instructions if i.keyword == "COPY" and i.words()[0] == "/opt/venv"]
        assert built.env["PATH"].split(":")[0] == f"{venv}/bin", "the venv's framebus comes first on PATH"
        healthcheck = [i for i in built.instructions if i.keyword == "HEALTHCHECK"]
        assert healthcheck and "FRAMEBUS_HEALTH_PORT" in healthcheck[-1].args
        for name in built.env:
            if name.startswith("FRAMEBUS_"):
                assert name.removeprefix("FRAMEBUS_").lower() in Settings.model_fields, f"{target}: {name} is no setting"
        Settings(**{name.removeprefix("FRAMEBUS_").lower(): value for name, value in built.env.items()
                    if name.startswith("FRAMEBUS_")})  # and each value is one the setting accepts


def test_torch_comes_from_the_pytorch_index_of_each_target(stages: list[Stage]) -> None:
    text = DOCKERFILE.read_text()
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.MULTILINE))
    worker = [Requirement(r) for r in pyproject()["project"]["optional-dependencies"]["worker"]]
    [torch] = [r for r in worker if r.name == "torch"]
    assert Version(defaults["TORCH_VERSION"]) in torch.specifier, "TORCH_VERSION outside the worker extra's range"

    def venv_runs(target: str) -> str:  # the RUN lines of the target and of the stages it copies its venv from
        by_name, runs = {s.name: s for s in stages}, image(stages, target).runs()
        for instruction in image(stages, target).instructions:
            if instruction.flags.get("from") in by_name:
                runs += "\n" + image(stages, instruction.flags["from"]).runs()
        return runs

    assert "https://download.pytorch.org/whl/cpu" in venv_runs("cpu")
    assert "https://download.pytorch.org/whl/${TORCH_CUDA}" in venv_runs("cuda")
    cuda = re.match(r"nvidia/cuda:(\d+)\.(\d+)", image(stages, "cuda").chain[0].base)
    assert defaults["TORCH_CUDA"] == f"cu{cuda.group(1)}{cuda.group(2)}", "TORCH_CUDA and the CUDA base image disagree"


def test_the_cuda_target_gives_the_container_cuda_and_nvenc(stages: list[Stage]) -> None:
    built = image(stages, "cuda")
    assert built.env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert {"compute", "utility", "video"} <= set(built.env["NVIDIA_DRIVER_CAPABILITIES"].split(","))
    assert "h264_nvenc" in built.runs() and "ffmpeg" in built.runs()


def test_labels_carry_the_project_version(stages: list[Stage]) -> None:
    for target in TARGETS:
        labels = image(stages, target).labels
        assert labels["org.opencontainers.image.version"] == pyproject()["project"]["version"]
        assert labels["org.opencontainers.image.licenses"] == pyproject()["project"]["license"]


# --- the install, as the image does it ------------------------------------------------------------

PROBE = """
import importlib, json, sys
import framebus
from framebus.services.cli.main import PROCESSORS
from framebus.services.common.settings import Settings
modules = [m for m, _ in PROCESSORS.values()] + sys.argv[1:]
for module in modules:
    importlib.import_module(module)
from framebus.services.generator.models import REGISTRY, checkpoint_dir
settings = Settings()
print(json.dumps({"framebus": framebus.__file__, "modules": modules, "models_dir": str(settings.models_dir),
                  "checkpoint": str(checkpoint_dir(REGISTRY[settings.default_model], settings.models_dir))}))
"""
# What each non-processor service command runs, imported in the installed venv (the processors' come from the CLI).
SERVICE_MODULES = ("framebus.services.gateway.app", "framebus.services.generator.app",
                   "framebus.services.generator.diffusion", "framebus.services.common.stack")


def test_installed_as_the_image_does_every_service_command_starts(stages: list[Stage], tmp_path: Path) -> None:
    """Builds the wheel from a directory holding only what the Dockerfile copies, installs it (not
    editable) into a fresh `python -m venv`, and runs the CLI from there with a fresh HOME and the
    target's ENV (its paths mapped into the temporary root).

    Only framebus comes from the wheel (`pip install --no-deps`): its dependencies (torch, diffusers,
    faust, ...; gigabytes) are made importable through a .pth file pointing at this checkout's venv,
    whose site-packages are thus appended to the fresh venv's sys.path. The fresh venv's own
    site-packages come first, so `framebus` is the installed copy; the checkout's editable-install
    hook is never loaded (a .pth line adds a directory, without running that directory's .pth files).
    """
    builder = wheel_stage(stages)
    builder_root, target_root = tmp_path / "builder", tmp_path / "cpu"
    replay_copies(context_copies(stages, builder.name), builder_root)
    source = builder_root / image(stages, builder.name).workdir.lstrip("/")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(source)], check=True, timeout=180, cwd=tmp_path)
    [wheel] = wheels.glob("framebus-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--disable-pip-version-check",
                    str(wheel)], check=True, timeout=120)
    fresh_site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     capture_output=True, text=True, check=True).stdout.strip())
    (fresh_site / "framebus-image-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    built = image(stages, "cpu")
    replay_copies(context_copies(stages, "cpu"), target_root)
    home = tmp_path / "home"
    home.mkdir()
    env = {**built.env, "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "COLUMNS": "200",
           "FRAMEBUS_MODELS_DIR": str(target_root / built.env["FRAMEBUS_MODELS_DIR"].lstrip("/"))}

    def run(*command: str) -> subprocess.CompletedProcess[str]:  # from the fresh HOME: never the checkout on sys.path
        return subprocess.run(list(command), capture_output=True, text=True, env=env, cwd=home, timeout=180)

    for command in ([], *([name] for name in SERVICE_COMMANDS)):
        helped = run(str(venv / "bin" / built.entrypoint[0]), *command, "--help")
        assert helped.returncode == 0, f"{' '.join(['framebus', *command])} --help: {helped.stderr[-2000:]}"
        assert f"Usage: framebus {' '.join(command)}".strip() in helped.stdout

    probed = run(str(python), "-c", PROBE, *SERVICE_MODULES)
    assert probed.returncode == 0, probed.stderr[-3000:]
    found = json.loads(probed.stdout.splitlines()[-1])
    assert Path(found["framebus"]).is_relative_to(fresh_site), f"framebus imported from {found['framebus']}"
    assert Path(found["checkpoint"]) == Path(env["FRAMEBUS_MODELS_DIR"]) / str(ClientSettings().default_model)
