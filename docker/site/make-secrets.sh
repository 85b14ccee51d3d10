#!/bin/bash
# Keys, known_hosts and .env for `docker compose --profile site up` (the example site).
# Writes ./secrets/{ssh,site,airflow} and ./.env; never overwrites an existing key.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p secrets/ssh secrets/site secrets/airflow
[ -f secrets/ssh/id_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -C hfc-airflow -f secrets/ssh/id_ed25519
[ -f secrets/site/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -C hfc-site -f secrets/site/ssh_host_ed25519_key
cp secrets/ssh/id_ed25519.pub secrets/site/authorized_keys
hostkey=$(cut -d' ' -f1,2 secrets/site/ssh_host_ed25519_key.pub)
printf '%s %s\n' slurm-head "$hostkey" sftp-archive "$hostkey" > secrets/ssh/known_hosts
[ -f secrets/airflow/passwords.json ] || python3 -c 'import json,secrets;print(json.dumps({"admin":secrets.token_urlsafe(12)}))' > secrets/airflow/passwords.json
chmod 644 secrets/ssh/id_ed25519 secrets/airflow/passwords.json  # read by the airflow user (uid 50000)
if [ ! -f .env ]; then
  cat > .env <<ENV
AIRFLOW_UID=$(id -u)
AIRFLOW_JWT_SECRET=$(python3 -c 'import secrets;print(secrets.token_urlsafe(32))')
HFC_SITE=production
AIRFLOW_CONN_HFC_CLUSTER={"conn_type":"ssh","host":"slurm-head","port":22,"login":"cluster","extra":{"key_file":"/opt/airflow/ssh/id_ed25519"}}
AIRFLOW_CONN_HFC_ARCHIVE={"conn_type":"sftp","host":"sftp-archive","port":22,"login":"archive","extra":{"key_file":"/opt/airflow/ssh/id_ed25519"}}
ENV
fi
echo "secrets/ and .env ready: docker compose --profile site up -d; UI login admin / $(python3 -c 'import json;print(json.load(open("secrets/airflow/passwords.json"))["admin"])')"
