#!/bin/bash
# Keys, known_hosts and .env for `docker compose --profile site up` (the example site).
# Writes ./secrets/{ssh,site,airflow} and ./.env; never overwrites an existing key or secret.
#
# - Every secret is created mode 0600 (umask 077 from the start, never chmod-ed down after):
#   the containers run as AIRFLOW_UID, the owner of these files (.env sets it to `id -u`).
# - One client key per account: secrets/ssh/cluster_ed25519 for the SLURM `cluster` account,
#   secrets/ssh/archive_ed25519 for the SFTP `archive` account; each account's authorized_keys
#   (secrets/site/authorized_keys_<account>) lists its own key only.
# - The connections in .env carry the site's host key (extra `host_key`): host keys are always
#   verified. An existing .env keeps its other lines (JWT secret...); its two connections are
#   rewritten to this layout.
set -euo pipefail
umask 077
cd "$(dirname "$0")/../.."
py=${PYTHON:-python3}
mkdir -p secrets/ssh secrets/site secrets/airflow
for account in cluster archive; do
  [ -f "secrets/ssh/${account}_ed25519" ] ||
    ssh-keygen -q -t ed25519 -N '' -C "hfc-airflow-$account" -f "secrets/ssh/${account}_ed25519"
  cut -d' ' -f1,2 "secrets/ssh/${account}_ed25519.pub" > "secrets/site/authorized_keys_$account.tmp"
  mv "secrets/site/authorized_keys_$account.tmp" "secrets/site/authorized_keys_$account"
done
[ -f secrets/site/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -C hfc-site -f secrets/site/ssh_host_ed25519_key
hostkey=$(cut -d' ' -f1,2 secrets/site/ssh_host_ed25519_key.pub)
printf '%s %s\n' slurm-head "$hostkey" sftp-archive "$hostkey" > secrets/ssh/known_hosts
[ -f secrets/airflow/passwords.json ] ||
  "$py" -c 'import json,secrets;print(json.dumps({"admin":secrets.token_urlsafe(12)}))' > secrets/airflow/passwords.json
HOSTKEY="$hostkey" "$py" - <<'PY'
import json, os, secrets

host_key = os.environ["HOSTKEY"]
conns = {
    f"AIRFLOW_CONN_HFC_{account.upper()}": json.dumps({
        "conn_type": conn_type, "host": host, "port": 22, "login": account,
        "extra": {"key_file": f"/opt/airflow/ssh/{account}_ed25519", "host_key": host_key},
    }, separators=(",", ":"))
    for account, conn_type, host in (("cluster", "ssh", "slurm-head"), ("archive", "sftp", "sftp-archive"))
}
try:
    with open(".env") as fh:
        lines = fh.read().splitlines()
except FileNotFoundError:
    lines = [f"AIRFLOW_UID={os.getuid()}", f"AIRFLOW_JWT_SECRET={secrets.token_urlsafe(32)}", "HFC_SITE=production"]
uid = dict(line.split("=", 1) for line in lines if "=" in line).get("AIRFLOW_UID")
if uid is not None and uid != str(os.getuid()):
    print(f"warning: .env has AIRFLOW_UID={uid} but the secrets are owned by uid {os.getuid()} "
          "(mode 0600): the containers could not read them; set AIRFLOW_UID to the owner", file=__import__("sys").stderr)
# The HQI service's read-only database role (hfc_hqi; `hfc db upgrade` in airflow-init sets it):
# made once, kept after. URL-safe, as it goes into the service's postgresql:// DSN.
if not any(line.startswith("HFC_HQI_DB_PASSWORD=") for line in lines):
    lines.append(f"HFC_HQI_DB_PASSWORD={secrets.token_urlsafe(24)}")
# The Celery broker's password (the redis service requires it; every Airflow service's broker
# URL carries it, hence URL-safe): made once, kept after.
if not any(line.startswith("HFC_REDIS_PASSWORD=") for line in lines):
    lines.append(f"HFC_REDIS_PASSWORD={secrets.token_urlsafe(24)}")
out = [line for line in lines if line.split("=", 1)[0] not in conns]
out += [f"{name}={value}" for name, value in conns.items()]
text = "\n".join(out) + "\n"
if not os.path.exists(".env") or open(".env").read() != text or os.stat(".env").st_mode & 0o077:
    if os.path.exists(".env.tmp"):
        os.unlink(".env.tmp")
    fd = os.open(".env.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(".env.tmp", ".env")
PY
rm -f secrets/ssh/id_ed25519 secrets/ssh/id_ed25519.pub secrets/site/authorized_keys  # the old shared key
echo "secrets/ and .env ready: docker compose --profile site up -d; UI login admin, password in secrets/airflow/passwords.json"
