#!/usr/bin/env bash
# Installs the Debian packages the project needs, only those not yet installed.
#   asterisk-core-sounds-en-wav: real recorded speech for the audio tests;
#   postgresql: a throwaway server for the listener-store tests on PostgreSQL;
#   chromium: the headless browser the web client's tests drive (never a downloaded one).
set -euo pipefail
packages=(asterisk-core-sounds-en-wav postgresql chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
