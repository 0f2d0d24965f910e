#!/usr/bin/env bash
# Start a real single-node SLURM cluster on loopback (for tests/cluster/), idempotently.
#
#   .ci/slurm_up.sh            install what is missing, start what is not running, wait for idle
#   .ci/slurm_up.sh --check    exit 0 when the cluster answers and the node is usable, else 1
#
# Debian's slurm-wlm + munge + slurmdbd/mariadb (so that `sacct` works; submitit polls it).
# No systemd: every daemon is started directly. Configs go to /etc/slurm (so sbatch/sacct find
# them without SLURM_CONF); state, logs, the database and pid files live under $SIMC_SLURM_DIR
# (default /tmp/simc-slurm). Facts behind the choices: ../shared/notes/slurm_local_cluster.md.
# Needs root (a build machine or CI container). From scratch: ~40 s with the apt install, ~3 s
# without; when everything already runs: < 1 s.
set -euo pipefail

DIR="${SIMC_SLURM_DIR:-/tmp/simc-slurm}"
CONF=/etc/slurm
DB_PASS=simc-slurmdbd
DB_SOCK="$DIR/mysqld/mysqld.sock"
DB_PORT="${SIMC_SLURM_DB_PORT:-3306}"

log() { echo "slurm_up: $*" >&2; }

cluster_ok() {
    timeout 5 scontrol ping >/dev/null 2>&1 || return 1
    local state
    state=$(timeout 5 sinfo -h -n localhost -o '%T' 2>/dev/null | head -n1)
    [[ "$state" =~ ^(idle|mixed|allocated|completing) ]] || return 1
    timeout 5 sacct -n -X -S now >/dev/null 2>&1
}

if [[ "${1:-}" == "--check" ]]; then
    cluster_ok
    exit $?
fi

# A pid file names a live (not zombie) process.
alive() {
    local pidfile=$1 pid
    [[ -s "$pidfile" ]] || return 1
    pid=$(cat "$pidfile")
    [[ -r "/proc/$pid/stat" ]] || return 1
    [[ "$(awk '{print $3}' "/proc/$pid/stat")" != "Z" ]]
}

wait_for() {  # wait_for <seconds> <description> <command...>
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq 1 $((seconds * 10))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    log "timed out after ${seconds}s waiting for $what"
    return 1
}

if [[ $(id -u) -ne 0 ]]; then
    log "needs root (it installs Debian packages and starts system daemons)"
    exit 1
fi

# -- packages --------------------------------------------------------------------------------
need=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge \
    slurmdbd:slurmdbd mariadbd:mariadb-server; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [[ -x "/usr/sbin/${pair%%:*}" ]] ||
        need+=("${pair#*:}")
done
if ((${#need[@]})); then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

mkdir -p "$DIR"/{log,spool/slurmd,state,run} "$CONF"

# -- munge -----------------------------------------------------------------------------------
if ! alive /run/munge/munged.pid; then
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged --force
    wait_for 10 munged munge -n
fi

# -- mariadb (own datadir; the run dir must belong to mysql or the socket is never made) -----
if ! alive "$DIR/mysqld/mysqld.pid"; then
    mkdir -p "$DIR/mysqld"
    chown mysql:mysql "$DIR/mysqld"
    if [[ ! -d "$DIR/mysql/mysql" ]]; then
        mkdir -p "$DIR/mysql" && chown mysql:mysql "$DIR/mysql"
        mariadb-install-db --user=mysql --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
            >"$DIR/log/mariadb-install.log" 2>&1
    fi
    setsid mariadbd --user=mysql --datadir="$DIR/mysql" --socket="$DB_SOCK" \
        --pid-file="$DIR/mysqld/mysqld.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --log-error="$DIR/log/mariadb.log" </dev/null >/dev/null 2>&1 &
    wait_for 30 mariadb mariadb -S "$DB_SOCK" -e 'SELECT 1'
fi
mariadb -S "$DB_SOCK" <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

# -- configs ---------------------------------------------------------------------------------
cpus=$(nproc)
mem_mb=$(($(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024))
cat >"$DIR/slurm.conf.new" <<EOF
# Written by .ci/slurm_up.sh: a single-node test cluster on loopback.
ClusterName=simc
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
MpiDefault=none
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$DIR/slurmdbd.conf.new" <<EOF
# Written by .ci/slurm_up.sh.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
EOF
changed=0
for name in slurm.conf slurmdbd.conf; do
    if ! cmp -s "$DIR/$name.new" "$CONF/$name"; then
        mv "$DIR/$name.new" "$CONF/$name"
        changed=1
    else
        rm "$DIR/$name.new"
    fi
done
chmod 600 "$CONF/slurmdbd.conf"
chmod 644 "$CONF/slurm.conf"

stop() {  # stop <pidfile>: TERM the daemon and wait until it is gone (zombies count as gone)
    local pidfile=$1
    local pid
    alive "$pidfile" || return 0
    pid=$(cat "$pidfile")  # read once: the daemon removes its pid file as it exits
    kill "$pid" 2>/dev/null || true
    wait_for 15 "$(basename "$pidfile") to stop" bash -c "! { [[ -r /proc/$pid/stat ]] && [[ \$(awk '{print \$3}' /proc/$pid/stat) != Z ]]; }"
}
if ((changed)); then
    log "configuration changed: restarting the SLURM daemons"
    stop "$DIR/run/slurmd.pid"
    stop "$DIR/run/slurmctld.pid"
    stop "$DIR/run/slurmdbd.pid"
fi

# -- daemons ---------------------------------------------------------------------------------
if ! alive "$DIR/run/slurmdbd.pid"; then
    slurmdbd
    wait_for 20 slurmdbd bash -c "exec 3<>/dev/tcp/127.0.0.1/6819"
fi
if ! alive "$DIR/run/slurmctld.pid"; then
    slurmctld
    wait_for 20 slurmctld scontrol ping
fi
if ! alive "$DIR/run/slurmd.pid"; then
    slurmd -N localhost
fi
wait_for 30 "node localhost to register" bash -c \
    "sinfo -h -n localhost -o '%T' | grep -qvE '^(unknown|down|drain|not_responding)'" || true
state=$(sinfo -h -n localhost -o '%T' | head -n1)
if [[ "$state" =~ (down|drain) ]]; then
    scontrol update NodeName=localhost State=RESUME || true
fi
if ! wait_for 30 "the cluster (scontrol ping, idle node, sacct)" cluster_ok; then
    log "cluster not usable; logs under $DIR/log"
    sinfo >&2 || true
    exit 1
fi
log "SLURM cluster 'simc' is up (partition debug, $cpus CPUs, ${mem_mb} MB); logs in $DIR/log"
