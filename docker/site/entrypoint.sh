#!/bin/bash
# Role of an example-site container: head | compute | archive (see docker-compose.yaml).
set -euo pipefail
secrets=/run/hfc-secrets
role=${1:?usage: hfc-site head|compute|archive}

start_munge() {
  # The munge key is shared through the site-munge volume; the head node creates it once.
  if [ ! -s /etc/munge/munge.key ]; then
    [ "$role" = head ] || { echo "waiting for the head node's munge key" >&2; sleep 5; exec "$0" "$role"; }
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged
}

start_sshd() {
  install -m 600 "$secrets/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
  mkdir -p /etc/ssh/authorized_keys
  for user in "$@"; do
    # Each account its own key (make-secrets.sh): authorized_keys_cluster, authorized_keys_archive.
    install -m 644 "$secrets/authorized_keys_$user" "/etc/ssh/authorized_keys/$user"
  done
  /usr/sbin/sshd -t && exec /usr/sbin/sshd -D -e
}

case "$role" in
  head)
    start_munge
    mkdir -p /var/spool/slurmctld /run/mysqld && chown mysql:mysql /run/mysqld
    mysqld_safe --bind-address=127.0.0.1 --innodb-buffer-pool-size=64M &
    for _ in $(seq 60); do mysqladmin ping >/dev/null 2>&1 && break; sleep 1; done
    slurmdbd
    sleep 2
    sacctmgr -i add cluster hfc >/dev/null 2>&1 || true
    slurmctld
    start_sshd cluster
    ;;
  compute)
    start_munge
    mkdir -p /var/spool/slurmd
    exec slurmd -D
    ;;
  archive)
    start_sshd archive
    ;;
  *) echo "unknown role $role" >&2; exit 2 ;;
esac
