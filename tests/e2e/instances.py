"""An Airflow instance of its own for an end-to-end test module (own metadata database, port,
catalogue database, registry), started and stopped through the ``hfc airflow`` command in a
subprocess: an instance is chosen by environment variables (``HFC_AIRFLOW_INSTANCE``,
``HFC_AIRFLOW_PORT``...) read when :mod:`hfc_tasks.ops.airflow_stack` is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hfc_tasks.airflow_api import AirflowAPI

REPO = Path(__file__).resolve().parents[2]
_STACK_ENV = "import json; from hfc_tasks.ops import airflow_stack; print(json.dumps(airflow_stack.stack_env()))"


@dataclass(frozen=True)
class Instance:
    """``env``: the whole environment of the instance's ``hfc`` commands (``HFC_AIRFLOW_*``...)."""

    env: dict[str, str]

    @property
    def name(self) -> str:
        return self.env["HFC_AIRFLOW_INSTANCE"]

    def hfc(self, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
        return subprocess.run([str(Path(sys.executable).with_name("hfc")), *args], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)

    def stack_env(self) -> dict[str, str]:
        """The environment the instance's components run with (catalogue DSN, passwords file...)."""
        out = subprocess.run([sys.executable, "-c", _STACK_ENV], env=self.env, capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def password(self) -> str:
        with open(self.stack_env()["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]) as f:
            return json.load(f)["admin"]

    def api(self) -> AirflowAPI:
        """A client logged in as admin."""
        return AirflowAPI(f"http://127.0.0.1:{self.env['HFC_AIRFLOW_PORT']}", "admin", self.password())

    def up(self, timeout: float = 400) -> AirflowAPI:
        """``hfc airflow up`` (or find it running); a client logged in as admin."""
        proc = self.hfc("airflow", "up", timeout=timeout)
        assert proc.returncode == 0, \
            f"hfc airflow up ({self.name}) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return self.api()


def local_registry(instance: str, written_by: str, frcs: str) -> str:
    """A registry of one site, ``local``, whose cluster run folders and archive tree are the
    instance's own (``products/_<instance>``, ``hfc/_<instance>``); ``frcs``: its ``frcs:`` items."""
    return f"""\
# Registry of the '{instance}' test instance (written by {written_by}).
default_site: local
sites:
  local:
    description: Local site, folders of the {instance} test instance
    products_root: ${{HFC_SITE_DIR}}/home/cluster/products/_{instance}
    frc_root: ${{HFC_SITE_DIR}}/home/cluster/frcs
    archive_root: ${{HFC_SITE_DIR}}/home/archive/hfc/_{instance}
    public_url_base: file://${{HFC_SITE_DIR}}/home/archive/hfc/_{instance}
    default_partition: debug
    stagger_seconds: 0
frcs:
{frcs}"""
