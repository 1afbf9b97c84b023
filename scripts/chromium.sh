#!/usr/bin/env bash
# Makes sure Debian's headless-capable Chromium and its WebDriver are installed, for the
# portal's browser test: /usr/bin/chromium and /usr/bin/chromedriver. Installs the
# `chromium` and `chromium-driver` packages with apt-get when either is missing (through
# sudo when not root). Nothing is downloaded from anywhere but the Debian archive.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
command -v apt-get >/dev/null \
  || { echo "chromium.sh: no apt-get; install Chromium and chromedriver as /usr/bin/chromium and /usr/bin/chromedriver" >&2; exit 1; }
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "chromium.sh: not root and no sudo to install chromium" >&2; exit 1; }
  sudo=(sudo)
fi
echo "chromium.sh: installing Debian's chromium and chromium-driver" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver fonts-liberation >/dev/null
[ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] \
  || { echo "chromium.sh: apt-get ran but /usr/bin/chromium or /usr/bin/chromedriver is missing" >&2; exit 1; }
echo "chromium.sh: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) installed" >&2
