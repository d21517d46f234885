# Sourced by dev-run.sh and schemathesis.sh: builds the three platform binaries and sets `bin`
# to the directory cargo put them in (CARGO_TARGET_DIR, build.target-dir, ...: ask cargo).
cargo="${CARGO:-cargo}"
"$cargo" build --locked -q -p cks-devcluster -p cks-operator -p cks-gateway
target_dir=$("$cargo" metadata --format-version 1 --no-deps --locked |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] && [ -x "$target_dir/debug/cks-gateway" ] ||
    { echo "cannot find the built binaries (cargo metadata said target directory '$target_dir')" >&2; exit 1; }
bin="$target_dir/debug"
