#!/usr/bin/env bash
# The CLI round trip from the shell: key -> root -> build -> sign -> verify, then three
# refusals (a tampered byte, a replay with --state, an expired bundle), each exit 1.
# Usage: scripts/roundtrip.sh [MESHKIT_BINARY]   (default: build one from this checkout)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
if [ $# -ge 1 ]; then meshkit=("$(realpath "$1")")
else (cd "$repo" && go build -o "$work/meshkit" ./cmd/meshkit); meshkit=("$work/meshkit"); fi
cd "$work"

mk() { "${meshkit[@]}" "$@"; }
refused() { # refused REASON CMD...: the command must exit 1 and print REASON
  local want=$1; shift
  set +e; out=$(mk "$@" 2>&1); code=$?; set -e
  echo "$out"
  if [ "$code" -ne 1 ] || ! grep -q "$want" <<<"$out"; then
    echo "FAIL: expected exit 1 with '$want', got exit $code" >&2; exit 1
  fi
}

mk key gen --out root.key
mk key gen --out seed.key
mk root init --domain prod --root-key root.key --threshold 1 --seed-key seed.key.pub --expires 30d --out root.json
mk bundle build -f "$repo/examples/shop" --domain prod --epoch 1 --version 1 --expires 1h --out v1.unsigned
mk bundle sign --key seed.key --in v1.unsigned --out v1.bundle
mk bundle verify --root root.json --state state.json v1.bundle

# Tamper with one byte in the middle of the signed bundle.
cp v1.bundle tampered.bundle
size=$(stat -c %s tampered.bundle); off=$((size / 2))
orig=$(od -An -tu1 -j "$off" -N1 tampered.bundle | tr -d ' ')
printf "$(printf '\\%03o' $(( (orig + 1) % 256 )))" | dd of=tampered.bundle bs=1 seek="$off" conv=notrunc status=none
refused "bad signature" bundle verify --root root.json tampered.bundle

refused "replay" bundle verify --root root.json --state state.json v1.bundle

mk bundle build -f "$repo/examples/shop" --domain prod --version 2 --issued-at 2020-01-01T00:00:00Z --expires 1h --out old.unsigned
mk bundle sign --key seed.key --in old.unsigned --out old.bundle
refused "expired" bundle verify --root root.json old.bundle

echo "round trip OK: valid bundle accepted; tampered, replayed and expired bundles refused"
