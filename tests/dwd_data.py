"""Where tests find the real DWD files: the byte-exact copies packaged with streamnotary.

`streamnotary/demo_data` ships the two real hourly archives (product and metadata files)
of the project's shared data set; PROVENANCE.md there records their origin and SHA-256,
which tests/test_dwd.py checks. Tests never name an absolute path, so they run wherever
the repository (or the installed package) is; lookups are functions, not import-time
directory listings, so a missing file fails the test that needs it with a clear message
instead of breaking collection.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def dwd_root() -> Path:
    """The packaged demo data directory (one `stundenwerte_TU_<id>_akt/` per station)."""
    return Path(str(resources.files("streamnotary").joinpath("demo_data")))


def station_dir(station: str) -> Path:
    """The unpacked DWD archive of `station` ("00427" or "00433")."""
    return dwd_root() / f"stundenwerte_TU_{station}_akt"


def product_file(station: str) -> Path:
    """The hourly product file (`produkt_tu_stunde_*.txt`) of `station`."""
    found = sorted(station_dir(station).glob("produkt_tu_stunde_*.txt"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one product file in {station_dir(station)}: {found}")
    return found[0]
