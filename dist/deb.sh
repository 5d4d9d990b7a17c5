#!/usr/bin/env bash
# Builds vigil's Debian package (target/debian/vigil_*.deb): the release binary (the engine,
# without `vigil demo`), its man pages and shell completions generated from it, then
# `cargo deb` with the metadata of Cargo.toml ([package.metadata.deb]).
# Needs cargo-deb (`cargo install cargo-deb --locked`). Extra arguments go to cargo deb.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --no-default-features
out=target/dist
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
target/release/vigil man --out "$out/man"
target/release/vigil completions bash >"$out/completions/vigil.bash"
target/release/vigil completions zsh >"$out/completions/_vigil"
target/release/vigil completions fish >"$out/completions/vigil.fish"
cargo deb --no-build --locked "$@"
