#!/usr/bin/env bash
# Copyright (c) The ehm_mm Authors. SPDX-License-Identifier: Apache-2.0
# The study tool's real slurm test (issue 26) on a one-node slurm started
# here: installs Debian's slurm + munge (as root; ~15 s), writes a
# slurm.conf for this host in a temporary folder, starts munged, slurmctld
# and slurmd, runs the test with EHM_REQUIRE_SLURM=1 (so it fails instead
# of skipping when slurm does not answer) and stops the daemons again.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/python_env.sh
PY="${EHM_PYTHON}"
if [ "$(id -u)" != 0 ]; then
    echo "slurm_ci.sh: needs root to install and start slurm" >&2; exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd \
        slurm-client munge >/dev/null
fi
work="$(mktemp -d /tmp/ehm_slurm.XXXXXX)"
host="$(hostname -s)"
mkdir -p "$work/state" "$work/spool" "$work/log"
cat > "$work/slurm.conf" <<CONF
ClusterName=ehmci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
NodeName=$host CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$work/slurm.conf"
stop() {
    for f in "$work/slurmd.pid" "$work/slurmctld.pid"; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    [ -n "${munge_pid:-}" ] && kill "$munge_pid" 2>/dev/null || true
    sleep 2
    rm -rf "$work"
}
trap stop EXIT
mkdir -p /run/munge "$work/munge"
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chmod 400 /etc/munge/munge.key
fi
if ! pgrep -x munged >/dev/null; then
    munged --force --pid-file="$work/munge/munged.pid" \
        --socket=/run/munge/munge.socket.2
    munge_pid="$(cat "$work/munge/munged.pid")"
fi
slurmctld
slurmd
for _ in $(seq 60); do
    sinfo -h -o '%T' 2>/dev/null | grep -qE '^idle' && break
    sleep 1
done
sinfo
EHM_REQUIRE_SLURM=1 OMP_NUM_THREADS=1 PYTHONPATH="$PWD" "$PY" -m pytest -q \
    -p no:cacheprovider tests/test_tools/test_masking_study_cluster.py \
    -k test_slurm_array_job_runs_for_real
