#!/bin/sh
# install.sh: install chimed, chimectl and their systemd units. See README.md, "Under systemd".
#
#   systemd/install.sh [--prefix DIR] [--bin-dir DIR] [--destdir DIR]
#
#   --prefix DIR   binaries go to DIR/bin, and the units' ExecStart= points there
#                  (default: $PREFIX, else /usr/local)
#   --bin-dir DIR  take chimed and chimectl from DIR instead of building them with
#                  `cargo build --release` (default: $CHIME_BIN_DIR)
#   --destdir DIR  stage every file under DIR, for packaging; touches nothing else on this
#                  machine: no group, no daemon-reload (default: $DESTDIR)
#
# Installs (each path under the staging directory, if any):
#   PREFIX/bin/chimed, PREFIX/bin/chimectl (stripped, where strip is installed)
#   PREFIX/share/man/man8/chimed.8, PREFIX/share/man/man1/chimectl.1 and chimectl-*.1
#   shell completions of chimectl: PREFIX/share/bash-completion/completions/chimectl,
#   PREFIX/share/zsh/site-functions/_chimectl, PREFIX/share/fish/vendor_completions.d/chimectl.fish
#   /etc/systemd/system/chimed.service, chimed.socket       (the system chimed)
#   /etc/systemd/user/chimed.service, chimed.socket         (a chimed per user, systemctl --user)
#   /etc/sysusers.d/chime.conf                              (the group chime)
#   /etc/pam.d/chime, if there is none: the PAM account stack chimed checks before each run
#   of a user's job, as cron checks its own (it includes the system's account stack)
#   /etc/chime/chimed.toml from systemd/chimed.toml.example, if that exists and no
#   configuration is there yet (an existing one is never touched)
# then, unless staging, creates the group chime (systemd-sysusers, else groupadd) and runs
# systemctl daemon-reload if systemd is running. It enables and starts nothing. Running it again
# installs the same files again.
set -eu

die() { echo "install.sh: $*" >&2; exit 1; }

prefix=${PREFIX:-/usr/local}
bin_dir=${CHIME_BIN_DIR:-}
destdir=${DESTDIR:-}
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#*=}; shift ;;
        --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a directory"; bin_dir=$2; shift 2 ;;
        --bin-dir=*) bin_dir=${1#*=}; shift ;;
        --destdir) [ $# -ge 2 ] || die "--destdir needs a directory"; destdir=$2; shift 2 ;;
        --destdir=*) destdir=${1#*=}; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
                   exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case $prefix in
    /*) ;;
    *) die "--prefix must be an absolute path, not $prefix" ;;
esac
# Without a trailing slash: ExecStart= gets PREFIX/bin/chimed with no "//".
prefix=${prefix%/}
bindir=$prefix/bin
src=$(cd "$(dirname "$0")" && pwd)

if [ -z "$bin_dir" ]; then
    command -v cargo >/dev/null || die "cargo is not installed: build chimed and chimectl \
elsewhere and pass --bin-dir DIR"
    echo "building chimed and chimectl (cargo build --release)"
    (cd "$src/.." && cargo build --release --locked -p chime-daemon -p chime-ctl --bins)
    bin_dir=${CARGO_TARGET_DIR:-$src/../target}/release
fi
for bin in chimed chimectl; do
    [ -x "$bin_dir/$bin" ] || die "$bin_dir/$bin is missing or not executable"
done

# install SRC DEST MODE: copy to a temporary name beside DEST, then rename it into place, so that a
# running chimed keeps its binary and nothing ever sees half a file.
put() {
    dest=$destdir$2
    mkdir -p "$(dirname "$dest")"
    tmp=$(dirname "$dest")/.$(basename "$dest").install.$$
    cp "$1" "$tmp"
    chmod "$3" "$tmp"
    mv -f "$tmp" "$dest"
    echo "installed $2"
}

# A unit with its ExecStart= pointing at this prefix's binaries.
put_unit() {
    tmp_unit=$(mktemp)
    sed "s|/usr/local/bin/|$bindir/|g" "$1" > "$tmp_unit"
    put "$tmp_unit" "$2" 0644
    rm -f "$tmp_unit"
}

# The binaries without their debug information: a fifth of their size (the build keeps it, for
# benchmarks and profiles); the symbols stay, so a backtrace still names the functions.
put_bin() {
    bin_tmp=$(mktemp)
    cp "$1" "$bin_tmp"
    if command -v strip >/dev/null; then
        strip --strip-debug "$bin_tmp"
    fi
    put "$bin_tmp" "$2" 0755
    rm -f "$bin_tmp"
}

put_bin "$bin_dir/chimed" "$bindir/chimed"
put_bin "$bin_dir/chimectl" "$bindir/chimectl"

# Manual pages and completions, made by the binaries from the definitions of their --help.
gen=$(mktemp -d)
"$bin_dir/chimed" --man > "$gen/chimed.8"
"$bin_dir/chimectl" man "$gen/man1" >/dev/null
"$bin_dir/chimectl" completions bash > "$gen/chimectl.bash"
"$bin_dir/chimectl" completions zsh > "$gen/_chimectl"
"$bin_dir/chimectl" completions fish > "$gen/chimectl.fish"
put "$gen/chimed.8" "$prefix/share/man/man8/chimed.8" 0644
for page in "$gen"/man1/*.1; do
    put "$page" "$prefix/share/man/man1/$(basename "$page")" 0644
done
put "$gen/chimectl.bash" "$prefix/share/bash-completion/completions/chimectl" 0644
put "$gen/_chimectl" "$prefix/share/zsh/site-functions/_chimectl" 0644
put "$gen/chimectl.fish" "$prefix/share/fish/vendor_completions.d/chimectl.fish" 0644
rm -rf "$gen"
put_unit "$src/chimed.service" /etc/systemd/system/chimed.service
put_unit "$src/chimed.socket" /etc/systemd/system/chimed.socket
put_unit "$src/user/chimed.service" /etc/systemd/user/chimed.service
put_unit "$src/user/chimed.socket" /etc/systemd/user/chimed.socket
put "$src/sysusers.d/chime.conf" /etc/sysusers.d/chime.conf 0644

# The PAM account stack of the service chime: the system's own, by the distribution's convention.
# An existing file is never replaced; without one, chimed checks accounts without PAM.
if [ -e "$destdir/etc/pam.d/chime" ]; then
    echo "kept /etc/pam.d/chime"
elif [ -d "$destdir/etc/pam.d" ] || [ -n "$destdir" ] || [ -d /etc/pam.d ]; then
    pam_tmp=$(mktemp)
    {
        echo "# chime: the account checks before each run of a user's job (see chimectl status)."
        if [ -f /etc/pam.d/common-account ]; then
            echo "@include common-account"
        elif [ -f /etc/pam.d/system-auth ]; then
            echo "account include system-auth"
        else
            echo "account required pam_unix.so"
        fi
    } > "$pam_tmp"
    put "$pam_tmp" /etc/pam.d/chime 0644
    rm -f "$pam_tmp"
fi

# The configuration format belongs to chimed; install its example only where it is defined.
if [ -f "$src/chimed.toml.example" ]; then
    if [ -e "$destdir/etc/chime/chimed.toml" ]; then
        echo "kept /etc/chime/chimed.toml (an existing configuration is never replaced)"
    else
        put "$src/chimed.toml.example" /etc/chime/chimed.toml 0644
    fi
fi

if [ -n "$destdir" ]; then
    echo "staged under $destdir; on the target, create the group chime (systemd-sysusers) and run"
    echo "systemctl daemon-reload"
    exit 0
fi

if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers /etc/sysusers.d/chime.conf
elif ! getent group chime >/dev/null; then
    groupadd --system chime
fi
getent group chime >/dev/null || die "the group chime could not be created"

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    cat <<'EOF'
done. Start chimed now and at every boot:
    systemctl enable --now chimed.socket chimed.service
Let a user submit jobs to it:
    usermod -aG chime USER
Or, for one user's own chimed instead:
    systemctl --user enable --now chimed.socket chimed.service
EOF
else
    echo "done (systemd is not running here: no daemon-reload)"
fi
