#!/usr/bin/env bash
# Starts a real one-node SLURM cluster on this machine (controller and node daemon, two CPUs)
# for the tests marked `slurm` (`make test-slurm`), which submit the README's sbatch scripts.
#
# Run as root on a clean Debian-like machine (CI) or a developer's box:
#     bash .ci/slurm_cluster.sh
# It installs Debian's slurm-wlm and munge when they are missing, writes
# /etc/slurm/slurm.conf, (re)starts munged, slurmctld and slurmd, and returns once `sinfo`
# shows the node up. Running it again restarts the daemons with the same state (job records
# and job ids survive), so it is safe to run twice.
#
# Environment: SLURM_CLUSTER_CPUS (default 2), SLURM_CLUSTER_TIMEOUT (seconds to wait for the
# node, default 60).
set -euo pipefail

CPUS="${SLURM_CLUSTER_CPUS:-2}"
TIMEOUT="${SLURM_CLUSTER_TIMEOUT:-60}"
# slurmd finds its NodeName entry by the short host name, so the config must use that name.
NODE="$(hostname -s)"
CONF=/etc/slurm/slurm.conf
RUN_DIR=/run/slurm
STATE_DIR=/var/lib/slurm/slurmctld
SPOOL_DIR=/var/lib/slurm/slurmd
LOG_DIR=/var/log/slurm

log() { echo "slurm_cluster: $*"; }
die() { echo "slurm_cluster: error: $*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || die "run as root (it installs packages and starts system daemons)"

# --- 1. Packages ------------------------------------------------------------------------
# slurm-wlm is the metapackage of slurmctld, slurmd and slurm-client (22.05 on bookworm);
# munge is its authentication. Skip apt entirely when both are installed: a rerun is fast
# and works offline.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if ! installed slurm-wlm || ! installed munge; then
  log "installing slurm-wlm and munge"
  # There is no init system in a container, and the packages would start daemons without
  # our config; a policy-rc.d that answers 101 ("action forbidden") stops them trying.
  # Docker images usually ship one already: only add (and later remove) our own.
  own_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    own_policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' > "$own_policy"
    chmod 755 "$own_policy"
    trap 'rm -f "$own_policy"' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Quiet unless it fails: the postinst scripts complain about the empty slurm.conf that
  # step 4 writes.
  apt_log="$(mktemp)"
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
      >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    die "apt-get could not install slurm-wlm and munge"
  fi
  rm -f "$apt_log"
  if [[ -n "$own_policy" ]]; then rm -f "$own_policy"; trap - EXIT; fi
fi
log "slurm-wlm $(dpkg-query -W -f='${Version}' slurm-wlm), munge $(dpkg-query -W -f='${Version}' munge)"

# --- 2. Stop what an earlier run started ------------------------------------------------
# By their pid files only: never by process name, which could hit someone else's daemon.
stop_pidfile() {
  local name="$1" pidfile="$2" pid
  [[ -s "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && die "$name (pid $pid) did not stop within 20 s"
  fi
  rm -f "$pidfile"
}
stop_pidfile slurmd "$RUN_DIR/slurmd.pid"
stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid"
stop_pidfile munged /run/munge/munged.pid

# --- 3. Munge ---------------------------------------------------------------------------
# Debian's munge postinst creates a key; make one if it did not (or it was removed). The
# key must be owned by munge and unreadable by others, or munged refuses to start.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating /etc/munge/munge.key"
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
# As the munge user, as its init script does (as root it needs --force).
runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null || die "munge does not round-trip a credential"

# --- 4. slurm.conf ----------------------------------------------------------------------
# The daemons talk over 127.0.0.1 (NodeAddr below), but jobs see the node by name:
# jax.distributed.initialize() connects to the first host of SLURM_STEP_NODELIST, so the
# name must resolve. Containers usually list it in /etc/hosts; add it where they do not.
if ! getent hosts "$NODE" >/dev/null; then
  log "adding $NODE to /etc/hosts"
  echo "127.0.0.1 $NODE" >> /etc/hosts
fi
mkdir -p /etc/slurm "$RUN_DIR" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR"
# RealMemory in MB, a little under the machine's so that slurmd never reports less than
# configured. (SlurmdParameters=config_overrides below also keeps a mismatch from draining
# the node, e.g. CPUs=2 on a one-core CI runner.)
mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 9 / 10240 ))
cat > "$CONF" <<EOF
# Written by .ci/slurm_cluster.sh: a one-node cluster for effnetlite's SLURM tests.
ClusterName=effnetlite
# 127.0.0.1: the short host name need not resolve in every container.
SlurmctldHost=${NODE}(127.0.0.1)
# Everything runs as root in CI; a dedicated slurm user would need its own state folders.
# Root's jobs are allowed (DisableRootJobs defaults to NO).
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No cgroups in a container: track processes through /proc and bind no tasks to cores.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SwitchType=switch/none
# A node that went DOWN (e.g. slurmd restarted) returns to service when it registers.
ReturnToService=2
# Jobs may be requeued (sbatch --requeue, scontrol requeue); KillWait stays at SLURM's
# default 30 s between SIGTERM and SIGKILL, the grace the README promises to fit in.
JobRequeue=1
KillWait=30
# No slurmdbd: sacct has no data. Finished jobs stay visible to "scontrol show job" for a
# day (MinJobAge) and every finished job gets a line in the jobcomp file (state, exit code).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=${LOG_DIR}/jobcomp.log
MinJobAge=86400
SlurmctldPidFile=${RUN_DIR}/slurmctld.pid
SlurmdPidFile=${RUN_DIR}/slurmd.pid
StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SPOOL_DIR}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmdParameters=config_overrides
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=main Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
log "wrote $CONF (node $NODE, $CPUS CPUs, ${mem_mb} MB)"

# --- 5. Daemons -------------------------------------------------------------------------
# Both daemonise; they keep their saved state, so job records and ids survive a rerun.
slurmctld || die "slurmctld did not start; see $LOG_DIR/slurmctld.log"
slurmd || die "slurmd did not start; see $LOG_DIR/slurmd.log"

# --- 6. Wait for the node ---------------------------------------------------------------
# idle on a fresh start; mix/alloc when a rerun finds jobs still running.
start=$SECONDS
state=""
while (( SECONDS - start < TIMEOUT )); do
  state="$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)"
  case "$state" in
    idle|mix|alloc) break ;;
    # A node drained or down from an earlier life (e.g. killed mid-job): put it back.
    drain*|down*|drng*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
if [[ ! "$state" =~ ^(idle|mix|alloc)$ ]]; then
  tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
  die "node $NODE is '${state:-not listed}' after ${TIMEOUT} s"
fi
log "node $NODE is $state after $(( SECONDS - start )) s"
sinfo
