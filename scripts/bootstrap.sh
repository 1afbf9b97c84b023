#!/usr/bin/env bash
# Creates .venv beside the checkout and installs Breakout with its dev and embedded extras into it.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${BREAKOUT_PYTHON:-python3}

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "bootstrap: Python 3.11 or newer is required ($python is $("$python" --version 2>&1))" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.breakout-installed"
digest=$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  echo "bootstrap: installing Breakout and its dependencies into .venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  # PYTHONWARNINGS reaches the build backend: no setuptools banner about editable installs.
  PYTHONWARNINGS=ignore "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[dev,embedded]"
  echo "$digest" > "$stamp"
fi
