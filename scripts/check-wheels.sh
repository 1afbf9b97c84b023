#!/usr/bin/env bash
# Checks that the container image's dependencies install on amd64 and arm64 Linux with
# no compiler (python:3.11-slim has none): each package the project resolves to has a
# CPython 3.11 wheel for both, or builds from its source into a pure-Python wheel with
# the compiler switched off. Downloads from PyPI; installs nothing. Run by scripts/test.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pip="$root/.venv/bin/python -m pip --disable-pip-version-check"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The image installs `pip install .`: the base dependencies, no extras.
"$root/.venv/bin/python" - "$root/pyproject.toml" > "$work/requirements.txt" <<'EOF'
import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))
EOF
$pip install --quiet --dry-run --ignore-installed --report "$work/report.json" -r "$work/requirements.txt"
"$root/.venv/bin/python" - "$work/report.json" > "$work/pinned.txt" <<'EOF'
import json, sys
for item in json.load(open(sys.argv[1]))["install"]:
    print(f"{item['metadata']['name']}=={item['metadata']['version']}")
EOF

status=0
for arch in x86_64 aarch64; do
  platforms=()
  for tag in manylinux1 manylinux2010 manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_28 manylinux_2_31 manylinux_2_34 manylinux_2_36; do
    platforms+=(--platform "${tag}_${arch}")  # glibc 2.36: Debian bookworm, the image's base
  done
  while read -r pinned; do
    if $pip download --quiet --no-deps --only-binary=:all: "${platforms[@]}" --platform any \
        --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
        -d "$work/$arch" "$pinned" >/dev/null 2>&1; then
      continue
    fi
    # No wheel: the source must build without a compiler into a wheel for any platform. Only
    # the package itself from source: its build dependencies come as wheels, as in the image.
    rm -rf "$work/sdist" && mkdir "$work/sdist"
    if CC=false CXX=false $pip wheel --quiet --no-deps --no-binary="${pinned%%==*}" -w "$work/sdist" "$pinned" >/dev/null 2>&1 \
        && ls "$work/sdist"/*-none-any.whl >/dev/null 2>&1; then
      echo "check-wheels: $pinned on $arch: no wheel, builds as pure Python without a compiler" >&2
    else
      echo "check-wheels: $pinned has no $arch wheel and does not build without a compiler" >&2
      status=1
    fi
  done < "$work/pinned.txt"
done
[ $status -eq 0 ] && echo "check-wheels: every dependency installs on x86_64 and aarch64 ($(wc -l < "$work/pinned.txt") packages)" >&2
exit $status
