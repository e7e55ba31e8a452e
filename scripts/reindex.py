#!/usr/bin/env python
"""Operators' entry point: bring an index in line with its sources (same as ``semsearch reindex``).

    python scripts/reindex.py SOURCE... [--index-dir DIR] [--full] [--dry-run] [--json] [--wait]

Suitable for cron: exits 0 on success, 2 when another reindex holds the lock (unless --wait) or on bad input.
"""

import sys

from semsearch.cli import main

if __name__ == "__main__":
    sys.exit(main(["reindex", *sys.argv[1:]]))
