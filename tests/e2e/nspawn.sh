#!/bin/bash
# nspawn.sh: a throw-away container with a real systemd as its PID 1, for chime's end-to-end
# tests (tests/tests/systemd.rs), on a machine whose own PID 1 may not be systemd. Needs root
# and systemd-nspawn (apt-get install systemd-container).
#
#   DIR=$(nspawn.sh init)                 make a work directory for one container
#   nspawn.sh run DIR [NSPAWN-OPTION]... & run it until it halts, then clean up DIR (foreground:
#                                         start it in the background; extra options go to
#                                         systemd-nspawn, e.g. --bind-ro=/src:/mnt/src)
#   nspawn.sh wait DIR                    wait until it has booted (prints its console on failure)
#   nspawn.sh exec DIR CMD [ARG]...       run CMD inside it, in all its namespaces
#   nspawn.sh halt DIR                    halt it and wait until `run` has cleaned up
#
# The container's root is the host's own root, read-only, under a tmpfs overlay
# (--volatile=overlay): every write lands in memory and vanishes at halt. Never boot systemd on
# the live root instead: its sysinit wipes /tmp and remounts cgroups read-only. What this keeps
# away from the host, and how:
# - `run` enters a private mount namespace (unshare) with a tmpfs on /run, where nspawn keeps its
#   own files (it will not remove them from a disk-backed /run), and binds / there
#   NON-recursively, read-only: the host's /proc, /sys, /dev and /run are not carried in.
# - No system bus and no systemd on the host: --register=no --keep-unit, and a cgroup made by
#   hand for nspawn to live in, removed at the end.
# - Processes entered with `exec` are not children of the container's systemd: at halt, its
#   shutdown would wait 90 s for any still running, so `halt` kills them first (only processes
#   in the container's PID namespace).
# The container's PID 1 is HOST_PID in /proc/HOST_PID/root: a Unix socket inside at /run/x is
# /proc/HOST_PID/root/run/x from the host. `exec` runs `nsenter -t HOST_PID -a`.
set -euo pipefail

BOOT_TIMEOUT=${CHIME_NSPAWN_BOOT_TIMEOUT:-60}

die() { echo "nspawn.sh: $*" >&2; exit 1; }
log() { echo "[nspawn.sh $(date +%T.%3N)] $*" >&2; }

# Whether process $1 exists and is not a zombie (an exited child its parent has not reaped).
alive() {
    local state
    state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# The cgroup hierarchies nspawn --keep-unit lives in: cgroup2 alone, or v1's named systemd
# hierarchy and the unified one beside it.
cgroup_roots() {
    if [ -e /sys/fs/cgroup/cgroup.procs ]; then
        echo /sys/fs/cgroup
    else
        local h
        for h in systemd unified; do
            [ -d "/sys/fs/cgroup/$h" ] && echo "/sys/fs/cgroup/$h"
        done
    fi
    return 0
}

check_dir() {
    [ -n "${1:-}" ] && [ -f "$1/name" ] || die "${1:-(none)} is not a work directory made by init"
}

leader_of() {
    [ -s "$1/leader" ] || die "the container in $1 has not booted (run nspawn.sh wait first)"
    cat "$1/leader"
}

cmd_init() {
    [ "$(id -u)" = 0 ] || die "needs root"
    command -v systemd-nspawn >/dev/null || die "needs systemd-nspawn: apt-get install systemd-container"
    local dir name
    dir=$(mktemp -d /tmp/chime-nspawn.XXXXXX)
    name=chime-e2e-$(basename "$dir" | cut -d. -f2 | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z')
    echo "$name" > "$dir/name"
    mkdir "$dir/root" "$dir/units"
    # The boot target: basic.target (journald, sysusers, tmpfiles, sockets) and nothing else,
    # so a boot takes well under a second.
    cat > "$dir/units/chime-e2e.target" <<'EOF'
[Unit]
Description=chime end-to-end tests
Requires=basic.target
After=basic.target
AllowIsolate=yes
EOF
    echo "$dir"
}

cmd_run() {
    local dir=$1; shift
    check_dir "$dir"
    local name cgroups="" root nspawn_pid status=0
    name=$(cat "$dir/name")
    for root in $(cgroup_roots); do cgroups="$cgroups $root/$name"; done
    echo $$ > "$dir/run.pid"
    # In the private mount namespace: the steps described at the top, then nspawn. It replaces
    # the shell, so its pid is the one recorded below.
    cat > "$dir/boot.sh" <<EOF
#!/bin/sh
set -e
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs /run
mount --bind / '$dir/root'
mount -o remount,bind,ro '$dir/root'
for cg in $cgroups; do mkdir -p "\$cg"; echo \$\$ > "\$cg/cgroup.procs"; done
exec systemd-nspawn --quiet --directory='$dir/root' --volatile=overlay \\
    --register=no --keep-unit --link-journal=no --private-network --machine='$name' \\
    --bind-ro='$dir/units:/usr/local/lib/systemd/system' "\$@" \\
    --boot systemd.unit=chime-e2e.target
EOF
    chmod 0755 "$dir/boot.sh"
    unshare --mount "$dir/boot.sh" "$@" > "$dir/console.log" 2>&1 < /dev/null &
    nspawn_pid=$!
    echo "$nspawn_pid" > "$dir/nspawn.pid"
    # SIGTERM to nspawn halts the container cleanly.
    trap 'kill -TERM "$nspawn_pid" 2>/dev/null || true' TERM INT HUP
    while :; do
        wait "$nspawn_pid" && status=0 || status=$?
        alive "$nspawn_pid" || break # else a trapped signal interrupted `wait`
    done
    [ "$status" = 0 ] || log "systemd-nspawn exited with status $status"

    # Clean up: the cgroups (empty now), then the work directory. The bind mount lived only in
    # the namespace that died with nspawn, so root/ is an empty directory here: rmdir, never rm -r.
    local failed=""
    for root in $(cgroup_roots); do
        if [ -d "$root/$name" ]; then
            find "$root/$name" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$root/$name" ] && { log "cannot remove the cgroup $root/$name"; failed=1; }
        fi
    done
    if mountpoint -q "$dir/root"; then
        log "$dir/root is still a mount point: leaving $dir alone"
        failed=1
    fi
    if [ -n "$failed" ]; then
        touch "$dir/cleanup-failed"
        exit 1
    fi
    if [ -n "${CHIME_NSPAWN_KEEP:-}" ]; then
        log "kept $dir (CHIME_NSPAWN_KEEP)"
        touch "$dir/cleaned-up"
        exit 0
    fi
    rmdir "$dir/root"
    rm -f "$dir/.#root.lck" "$dir/units/chime-e2e.target" "$dir/boot.sh" "$dir/console.log" \
        "$dir/name" "$dir/run.pid" "$dir/nspawn.pid" "$dir/leader"
    rmdir "$dir/units" "$dir"
}

cmd_wait() {
    local dir=$1
    check_dir "$dir"
    local deadline=$((SECONDS + BOOT_TIMEOUT)) nspawn_pid="" leader="" state started=$SECONDS
    fail() {
        log "$1; its console said:"
        cat "$dir/console.log" >&2 2>/dev/null || true
        exit 1
    }
    until [ -s "$dir/nspawn.pid" ]; do
        [ $SECONDS -lt $deadline ] || fail "nspawn.sh run never started"
        sleep 0.02
    done
    nspawn_pid=$(cat "$dir/nspawn.pid")
    # nspawn's child named systemd is the container's PID 1.
    until leader=$(pgrep -P "$nspawn_pid" -x systemd); do
        alive "$nspawn_pid" || fail "systemd-nspawn exited"
        [ $SECONDS -lt $deadline ] || fail "no systemd in the container after ${BOOT_TIMEOUT}s"
        sleep 0.02
    done
    until nsenter -t "$leader" -a test -S /run/systemd/private 2>/dev/null; do
        alive "$leader" || fail "the container's systemd exited"
        [ $SECONDS -lt $deadline ] || fail "systemd did not come up within ${BOOT_TIMEOUT}s"
        sleep 0.02
    done
    state=$(timeout "$BOOT_TIMEOUT" nsenter -t "$leader" -a systemctl is-system-running --wait) || true
    case $state in
        running|degraded) ;;
        *) fail "the container's boot ended in state ${state:-unknown}" ;;
    esac
    echo "$leader" > "$dir/leader"
    log "container $(cat "$dir/name") booted ($state) in about $((SECONDS - started)) s; PID 1 is $leader"
}

cmd_exec() {
    local dir=$1; shift
    check_dir "$dir"
    [ $# -gt 0 ] || die "exec needs a command"
    exec nsenter -t "$(leader_of "$dir")" -a -- "$@"
}

# SIGKILL the processes in the container's PID namespace that its systemd did not start (the
# ones entered with exec), so that its shutdown does not wait for them.
kill_strays() {
    local leader=$1 ns proc pid up
    ns=$(readlink "/proc/$leader/ns/pid") || return 0
    for proc in /proc/[0-9]*; do
        pid=${proc#/proc/}
        [ "$(readlink "$proc/ns/pid" 2>/dev/null)" = "$ns" ] || continue
        up=$pid
        while [ "${up:-0}" -gt 1 ] && [ "$up" != "$leader" ]; do
            up=$(awk '/^PPid:/ { print $2 }' "/proc/$up/status" 2>/dev/null) || up=0
        done
        [ "$up" = "$leader" ] || kill -KILL "$pid" 2>/dev/null || true
    done
}

cmd_halt() {
    local dir=$1
    [ -d "$dir" ] || return 0 # already cleaned up
    check_dir "$dir"
    local nspawn_pid run_pid leader="" started=$SECONDS
    nspawn_pid=$(cat "$dir/nspawn.pid" 2>/dev/null) || die "$dir has no container running"
    run_pid=$(cat "$dir/run.pid")
    [ -s "$dir/leader" ] && leader=$(cat "$dir/leader")
    [ -n "$leader" ] || leader=$(pgrep -P "$nspawn_pid" -x systemd) || leader=""
    if alive "$nspawn_pid"; then
        [ -n "$leader" ] && kill_strays "$leader"
        kill -TERM "$nspawn_pid"
        local deadline=$((SECONDS + 15))
        while alive "$nspawn_pid" && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
        if alive "$nspawn_pid"; then
            log "the container did not halt within 15 s: SIGKILL to its PID 1 (ends its PID namespace)"
            [ -n "$leader" ] && kill -KILL "$leader" 2>/dev/null
            deadline=$((SECONDS + 5))
            while alive "$nspawn_pid" && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
            alive "$nspawn_pid" && kill -KILL "$nspawn_pid"
        fi
    fi
    # `run` cleans up once nspawn has exited.
    while alive "$run_pid" && [ -d "$dir" ]; do sleep 0.02; done
    [ ! -e "$dir/cleanup-failed" ] || die "cleaning up $dir failed (see above)"
    log "container halted and cleaned up in about $((SECONDS - started)) s"
}

[ $# -ge 1 ] || { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
command=$1; shift
case $command in
    init) cmd_init ;;
    run|wait|exec|halt)
        [ $# -ge 1 ] || die "$command needs the work directory made by init"
        "cmd_$command" "$@" ;;
    *) die "unknown command $command (init, run, wait, exec, halt)" ;;
esac
