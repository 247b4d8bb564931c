"""Sub-command `generate`: write seeded synthetic DWD history (tasks/synth.py) to disk.

Archives are written as DWD zip files (or, with ``--unzipped``, as DWD's unpacked
directories) whose bytes depend only on the options: zip entries carry a fixed date, so
re-generating gives byte-identical files and `ingest` recognises them as already ingested.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from datetime import date
from pathlib import Path

from tasks.synth import (
    DEFAULT_REPUBLISH_DAYS,
    HOURLY,
    TEN_MINUTES,
    SyntheticArchive,
    SynthOptions,
    archives,
)

_ZIP_DATE = (2020, 1, 1, 0, 0, 0)


def register(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser(
        "generate", help="write seeded synthetic DWD history (many stations x years) for tests"
    )
    gen.add_argument("outdir", type=Path, help="directory to write the archives into")
    gen.add_argument("--stations", type=int, default=10)
    gen.add_argument("--start", type=date.fromisoformat, default=date(2019, 1, 1))
    gen.add_argument("--days", type=int, default=365)
    gen.add_argument("--product", choices=(HOURLY, TEN_MINUTES), default=HOURLY)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--no-republish", action="store_true", help="no _akt re-publication archives")
    gen.add_argument("--unzipped", action="store_true", help="directories instead of zips")
    gen.add_argument("--json", action="store_true", help="print the quirk counts as JSON")
    gen.set_defaults(func=cmd_generate)


def write_archive(archive: SyntheticArchive, outdir: Path, *, zipped: bool = True) -> Path:
    """Write one archive under `outdir`; returns the zip file or the product file."""
    outdir.mkdir(parents=True, exist_ok=True)
    if not zipped:
        folder = outdir / archive.name
        folder.mkdir(exist_ok=True)
        for name, data in sorted(archive.members.items()):
            (folder / name).write_bytes(data)
        return next(folder / n for n in sorted(archive.members) if n.startswith("produkt_"))
    path = outdir / f"{archive.name}.zip"
    tmp = path.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(archive.members.items()):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, compresslevel=1)
    tmp.replace(path)
    return path


def write_history(
    options: SynthOptions, outdir: Path, *, zipped: bool = True
) -> list[tuple[Path, dict[str, int]]]:
    """Write every archive of `options`; returns (path, quirk counts) per archive."""
    return [(write_archive(a, outdir, zipped=zipped), a.quirks) for a in archives(options)]


def cmd_generate(args: argparse.Namespace) -> int:
    options = SynthOptions(
        seed=args.seed,
        stations=args.stations,
        start=args.start,
        days=args.days,
        product=args.product,
        republish_days=0 if args.no_republish else DEFAULT_REPUBLISH_DAYS,
    )
    written = write_history(options, args.outdir, zipped=not args.unzipped)
    if args.json:
        doc = {str(path): quirks for path, quirks in written}
        json.dump(doc, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        rows = sum(q["rows"] for _, q in written)
        print(f"wrote {len(written)} archive(s), {rows} rows, to {args.outdir}")
    return 0


if __name__ == "__main__":
    from streamnotary.cli import main

    sys.exit(main(["generate", *sys.argv[1:]]))
