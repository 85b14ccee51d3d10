"""The catalogue stage's pure logic: schema migrations, product readers, the night loader.

No Airflow here: the operator, the CLI, the tests and the benchmarks call the same code.
"""

from hfc_tasks.catalogue.loader import ArchiveReadError, LoadReport, RejectedFile, load_night
from hfc_tasks.catalogue.readers import ProductFileError, read_product
from hfc_tasks.catalogue.schema import MigrationError, upgrade
from hfc_tasks.manifest import ManifestError

__all__ = [
    "ArchiveReadError",
    "LoadReport",
    "ManifestError",
    "MigrationError",
    "ProductFileError",
    "RejectedFile",
    "load_night",
    "read_product",
    "upgrade",
]
