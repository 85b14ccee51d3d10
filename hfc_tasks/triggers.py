"""Where :class:`SlurmJobTrigger` lived before the Airflow layer had its own subpackage.

Airflow stores a deferred task's trigger by class path (``hfc_tasks.triggers.SlurmJobTrigger``)
in its database; a triggerer started after a deploy must still import the waits deferred before
it. Keep this alias as long as such rows may exist (tests/unit/test_layering.py checks it).
"""

from hfc_tasks.provider.triggers import SlurmJobTrigger

__all__ = ["SlurmJobTrigger"]
