#!/usr/bin/env bash
# vizpipe's one entry point for people and CI.
#   ./dev.sh run  [hydra overrides...]   set up .venv if needed, then run the pipeline
#   ./dev.sh test [pytest args...]       set up .venv (+ headless Chromium when possible), lint (ruff),
#                                        run the tests
# Setup is idempotent: a second call reuses .venv unless pyproject.toml changed. 'test' also installs
# the library extras (timm, lightning, notebook: the timm models, the Lightning callback and the
# notebook run in a Jupyter kernel; quantus: the metrics' reference implementation) and the cluster
# extra (Hydra's joblib, submitit and ray launchers), so CI runs their tests; without the cluster
# extra the launcher tests are skipped.
set -euo pipefail
cd "$(dirname "$0")"

pick_python() {
  for c in "${PYTHON:-}" python3.11 python3 python; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  echo "vizpipe: need Python >= 3.10 (3.11 recommended) on PATH" >&2; exit 1
}

#: what 'test' installs besides dev: the library extras (CI runs their tests), then the cluster extra
TEST_EXTRAS=timm,lightning,notebook,quantus
#: Quantus (tests/test_metrics.py's reference), installed without its opencv-python requirement: it
#: would replace grad-cam's opencv-python-headless; its other requirements are the quantus extra
QUANTUS='quantus>=0.6,<0.7'

setup_venv() {
  # $1: dev (run) or test (dev, the library extras and, where it installs, the cluster extra)
  local want=${1:-dev} stamp=.venv/.vizpipe-setup sum have done=dev
  sum=$(cksum pyproject.toml | cut -d' ' -f1)
  have=$(cat "$stamp" 2>/dev/null || true)
  if [ -x .venv/bin/python ] && { [ "$have" = "$sum $want" ] || [ "$have" = "$sum test" ]; }; then
    return 0
  fi
  echo "vizpipe: setting up .venv (first time takes a few minutes)" >&2
  [ -x .venv/bin/python ] || "$(pick_python)" -m venv .venv
  # editable: 'vizpipe' (and only it) imports from this checkout, wherever Python starts
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
  if [ "$want" = test ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,$TEST_EXTRAS]"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "$QUANTUS"
    # ray is large and has no wheel on some platforms: without the launchers their tests are skipped
    if .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,$TEST_EXTRAS,cluster]"; then
      done=test
    else
      echo "vizpipe: the cluster extra did not install; the launcher tests will be skipped" >&2
      done=dev
    fi
  fi
  echo "$sum $done" > "$stamp"
}

setup_browser() {
  # The report tests render HTML in headless Chromium; they skip cleanly without it.
  command -v chromium >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "vizpipe: installing Debian's chromium for the browser tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "vizpipe: chromium not installed; browser tests will be skipped" >&2
  fi
}

cmd=${1:-run}
[ $# -gt 0 ] && shift
case "$cmd" in
  run)  setup_venv dev; exec .venv/bin/python run.py "$@" ;;
  test) setup_venv test; setup_browser
        .venv/bin/ruff check . && .venv/bin/ruff format --check . \
          || { echo "vizpipe: lint failed (ruff check / ruff format --check)" >&2; exit 1; }
        exec .venv/bin/python -m pytest "$@" ;;
  *)    echo "usage: ./dev.sh run [overrides...] | ./dev.sh test [pytest args...]" >&2; exit 2 ;;
esac
