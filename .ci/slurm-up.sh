#!/usr/bin/env bash
# A single-node Slurm cluster on this machine (Debian's slurm-wlm + munge, no systemd, root), for
# the Slurm backend's tests and for developers:
#
#   .ci/slurm-up.sh          install if absent, write slurm.conf, start munged/slurmctld/slurmd,
#                            wait (bounded) until the node is idle; a running cluster is left as it is
#   .ci/slurm-up.sh stop     stop the three daemons by their pid files
#
# Partitions: `debug` (default, PriorityTier=1) and `urgent` (PriorityTier=10): a job on `urgent`
# preempts (requeues) jobs on `debug`. Job start/end times go to jobcomp/filetxt (no slurmdbd).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
PIDS=(/run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid)

stop() {
  for pidfile in "${PIDS[@]}"; do
    [ -s "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
  done
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "${1:-}" = "stop" ]; then stop; exit 0; fi

if ! command -v sbatch >/dev/null || [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/munged ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

if alive /run/slurmctld.pid && alive /run/slurmd.pid && alive /run/munge/munged.pid; then
  exit 0
fi
stop

mkdir -p /run/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm "$CONF_DIR"
chown munge:munge /run/munge
[ -s /etc/munge/munge.key ] || { mungekey -c >/dev/null 2>&1 || create-munge-key -f >/dev/null; }
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key

CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
cat > "$CONF" <<CONF
# written by mcc's .ci/slurm-up.sh: one node, this machine
ClusterName=mcc
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# the cgroup plugins would move jobs out of this machine's own memory cgroup
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# start/end times of every job without slurmdbd
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
MaxArraySize=10001
ReturnToService=2
MinJobAge=30
KillWait=5
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=localhost MaxTime=INFINITE State=UP PriorityTier=10
CONF

runuser -u munge -- /usr/sbin/munged
/usr/sbin/slurmctld
/usr/sbin/slurmd -N localhost

for _ in $(seq 300); do  # at most 30 s
  state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mixed|allocated) exit 0 ;;
    down*|drain*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.1
done
echo "slurm-up: the node is not idle after 30 s (state: ${state:-none}); see /var/log/slurm/" >&2
exit 1
