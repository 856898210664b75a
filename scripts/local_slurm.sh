#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (with accounting, so that sacct works as on a real
# cluster), for gan_lab's slurm tests and for trying the SLURM launcher before using a real cluster.
#
#   scripts/local_slurm.sh up     install the Debian packages if missing (as root), write the
#                                 configuration, start munge, MariaDB, slurmdbd, slurmctld and slurmd,
#                                 and wait until the node is idle
#   scripts/local_slurm.sh down   stop exactly the daemons `up` started, and remove their state
#   scripts/local_slurm.sh env    print the line that points SLURM's commands at this cluster:
#                                 eval "$(scripts/local_slurm.sh env)"
#   scripts/local_slurm.sh conf   print the path of its slurm.conf (for SLURM_CONF)
#
# Everything lives in $GAN_LAB_SLURM_DIR (default /tmp/gan_lab_slurm); the cluster has one node
# (this machine's CPUs and memory) and one partition, `debug`; a requeued job waits 10 s before it
# starts again (cred_expire; 120 s by default). Both commands are idempotent.
set -euo pipefail

DIR=${GAN_LAB_SLURM_DIR:-/tmp/gan_lab_slurm}
CONF=$DIR/etc/slurm.conf
PORT=${GAN_LAB_SLURM_PORT:-6817}     # slurmctld; slurmd takes PORT+1, slurmdbd PORT+2, MariaDB PORT+3
NODE=$(hostname -s)
DAEMONS=(slurmd slurmctld slurmdbd mariadb munged)   # the order `down` stops them in

say() { echo "local_slurm: $*"; }
die() { echo "local_slurm: error: $*" >&2; exit 2; }
running() { [[ -f $DIR/run/$1.pid ]] && kill -0 "$(cat "$DIR/run/$1.pid")" 2>/dev/null; }

install_packages() {
    local missing=()
    for cmd in munged slurmctld slurmd slurmdbd sbatch mariadbd; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    [[ $(id -u) -eq 0 ]] || die "${missing[*]} missing; run as root so that the Debian packages can be installed."
    command -v apt-get >/dev/null || die "${missing[*]} missing and this is not a Debian/Ubuntu system; install SLURM and MariaDB."
    say "installing slurmctld slurmd slurmdbd slurm-client munge mariadb-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurmdbd slurm-client munge mariadb-server >/dev/null
}

write_config() {
    mkdir -p "$DIR"/{etc,run,log,state,spool,munge,db}
    chmod 700 "$DIR/munge"
    [[ -f $DIR/munge/munge.key ]] || mungekey --create --keyfile="$DIR/munge/munge.key" 2>/dev/null \
        || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    cat >"$CONF" <<EOF
ClusterName=gan_lab_local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=100000
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePass=$DIR/run/munge.socket
AccountingStoragePort=$((PORT + 2))
JobAcctGatherType=jobacct_gather/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((PORT + 3))
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
}

wait_for() {  # wait_for <seconds> <what> <command...>
    local limit=$1 what=$2; shift 2
    local end=$((SECONDS + limit))
    while ((SECONDS < end)); do timeout 5 "$@" >/dev/null 2>&1 && return; sleep 0.2; done
    die "$what did not come up within ${limit} s; see $DIR/log/."
}

start() {
    export SLURM_CONF=$CONF
    if ! running munged; then
        munged --force --socket="$DIR/run/munge.socket" --key-file="$DIR/munge/munge.key" \
            --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
            --seed-file="$DIR/munge/munged.seed"
        wait_for 10 munged test -S "$DIR/run/munge.socket"
    fi
    if ! running mariadb; then
        [[ -d $DIR/db/mysql ]] || mariadb-install-db --datadir="$DIR/db" --user=root \
            --auth-root-authentication-method=normal >"$DIR/log/mariadb-install.log" 2>&1
        mariadbd --datadir="$DIR/db" --user=root --bind-address=127.0.0.1 --port=$((PORT + 3)) \
            --socket="$DIR/run/mariadb.sock" --pid-file="$DIR/run/mariadb.pid" \
            --log-error="$DIR/log/mariadb.log" --skip-log-bin >/dev/null 2>&1 &
        wait_for 30 MariaDB mariadb-admin --socket="$DIR/run/mariadb.sock" -uroot ping
    fi
    running slurmdbd || slurmdbd
    wait_for 30 slurmdbd sacctmgr -i show cluster
    sacctmgr -i show cluster -n format=cluster | grep -q gan_lab_local \
        || sacctmgr -i add cluster gan_lab_local >/dev/null
    running slurmctld || slurmctld -f "$CONF"
    running slurmd || slurmd -f "$CONF"
    wait_for 60 "the node" sh -c "sinfo -h -N -o %t | grep -qx idle"
    say "up: node $NODE ($(nproc) CPUs), partition debug; $(basename "$0") env prints SLURM_CONF"
}

stop() {
    for daemon in "${DAEMONS[@]}"; do
        running "$daemon" || continue
        local pid
        pid=$(cat "$DIR/run/$daemon.pid")
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    done
    # jobs still running on the node were started by slurmd: stop them with it
    pkill -f "slurmstepd: \[" 2>/dev/null || true
    rm -rf "$DIR"
    say "down"
}

case ${1:-} in
    up) install_packages; running slurmctld && running slurmd && { say "already up"; exit 0; }
        write_config; start ;;
    down) [[ -d $DIR ]] && stop || say "not running" ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    conf) echo "$CONF" ;;
    *) echo "usage: $0 up|down|env|conf" >&2; exit 2 ;;
esac
