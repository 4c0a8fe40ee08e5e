#!/usr/bin/env bash
# Start / stop a single-node SLURM cluster on this machine (Debian 12, root, no systemd).
#   source .ci/slurm.sh; slurm_start; ...; slurm_stop
# Installs the Debian packages if needed. State, logs and PID files live under $SLURM_DIR.
# Facts behind the settings: ../shared/notes/slurm.md.

SLURM_DIR="${SLURM_DIR:-/tmp/gpscat-slurm}"

slurm_install() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        apt-get install -y -q slurmctld slurmd slurm-client munge >"$SLURM_DIR/apt.log" 2>&1 || {
            apt-get update -q >>"$SLURM_DIR/apt.log" 2>&1
            apt-get install -y -q slurmctld slurmd slurm-client munge >>"$SLURM_DIR/apt.log" 2>&1
        }
    fi
}

slurm_write_conf() {
    local cpus mem
    cpus=$(nproc)
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$((mem * 85 / 100))
    mkdir -p "$SLURM_DIR"/{state,spool,log}
    cat >/etc/slurm/slurm.conf <<CONF
ClusterName=gpscat-ci
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
}

slurm_start() {
    mkdir -p "$SLURM_DIR"
    slurm_install
    slurm_write_conf
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    slurmctld
    slurmd -N localhost
    local i
    for i in $(seq 1 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qE '^idle'; then
            echo "SLURM up: $(sinfo -h -o '%N %c CPUs %m MB %T')"
            return 0
        fi
        [ "$i" = 10 ] && scontrol update nodename=localhost state=resume 2>/dev/null || true
        sleep 1
    done
    echo "SLURM did not come up; logs in $SLURM_DIR/log" >&2
    tail -20 "$SLURM_DIR"/log/*.log >&2 || true
    return 1
}

slurm_stop() {
    scancel --user=root 2>/dev/null || true
    local f
    for f in "$SLURM_DIR/slurmd.pid" "$SLURM_DIR/slurmctld.pid" /run/munge/munged.pid; do
        if [ -s "$f" ]; then
            kill "$(cat "$f")" 2>/dev/null || true
        fi
    done
    sleep 1
}
