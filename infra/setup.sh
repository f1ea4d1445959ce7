#!/usr/bin/env bash
# Installs everything framebus needs on a fresh Debian machine, then the project into .venv.
# Idempotent and quick when everything is there. Downloads are cached outside the clone:
# pip in ~/.cache/pip, Maven in ~/.m2, Go in ~/.cache/go-build and ~/go/pkg/mod,
# Kafka jars and the versitygw binary in ~/.cache/framebus (FRAMEBUS_CACHE_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

need_apt=()
command -v ffmpeg >/dev/null || need_apt+=(ffmpeg)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v go >/dev/null || need_apt+=(golang-go)
command -v npm >/dev/null || need_apt+=(npm)
command -v kcat >/dev/null || need_apt+=(kcat)  # the README's any-Kafka-client examples and their test
if ((${#need_apt[@]})); then
  echo "setup: installing system packages: ${need_apt[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Debian's Go may be older than versitygw needs; GOTOOLCHAIN=auto lets `go` fetch a newer
# toolchain through the module proxy when a module asks for one.
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}

# kustomize renders infra/k8s for tests/infra/test_k8s.py: pinned, built once into the cache.
KUSTOMIZE_VERSION=v5.7.1
tools="${FRAMEBUS_CACHE_DIR:-$HOME/.cache/framebus}/bin"
if [[ "$("$tools/kustomize" version 2>/dev/null)" != "$KUSTOMIZE_VERSION" ]]; then
  echo "setup: building kustomize $KUSTOMIZE_VERSION into $tools"
  GOBIN="$tools" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi

stamp="$VENV/.framebus-installed"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" || setup.py -nt "$stamp" ]]; then
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip setuptools wheel
  # A CPU box gets a CPU build of torch where pip's configuration offers one in a find-links
  # folder (the default wheel carries several GB of CUDA libraries it never uses).
  wheels=$("$VENV/bin/python" -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p" | head -1)
  if [[ -n "$wheels" ]] && compgen -G "$wheels/torch-*+cpu*.whl" >/dev/null; then
    echo "setup: torch from the CPU build in $wheels"
    "$VENV/bin/python" -m pip install -q --no-index --find-links "$wheels" torch
  fi
  "$VENV/bin/python" -m pip install -q -e '.[all,test]'
  touch "$stamp"
fi
echo "setup: ready ($("$VENV/bin/python" --version), $(ffmpeg -version | head -1 | cut -d' ' -f1-3), $(java -version 2>&1 | head -1))"
