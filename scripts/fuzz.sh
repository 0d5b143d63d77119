#!/usr/bin/env bash
# fuzz.sh runs every Fuzz target of the module, one after another, each for
# FUZZTIME (default 30s). New failing inputs land in the package's
# testdata/fuzz/<Target>/ directory: commit them with the fix.
#
# Environment: FUZZTIME, GO (default go), FUZZ (a regexp: only targets whose
# name matches).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly FUZZTIME="${FUZZTIME:-30s}" GO="${GO:-go}" FILTER="${FUZZ:-.}"

targets=0 failed=()
# Test files that declare fuzz targets, outside testdata and hidden folders.
while IFS= read -r file; do
	dir=$(dirname "$file")
	while IFS= read -r name; do
		[[ "$name" =~ $FILTER ]] || continue
		targets=$((targets + 1))
		echo "== $dir $name ($FUZZTIME)"
		"$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "./$dir" || failed+=("$dir $name")
	done < <(sed -n -E 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/p' "$file")
done < <(find . -name '*_test.go' -not -path '*/testdata/*' -not -path './.*' -not -path './bin/*' |
	sed 's#^\./##' | sort)

if ((targets == 0)); then
	echo "fuzz: no Fuzz targets found"
	exit 0
fi
echo "fuzz: $targets target(s) ran for $FUZZTIME each, ${#failed[@]} failed"
if ((${#failed[@]} > 0)); then
	printf '  failed: %s\n' "${failed[@]}"
	exit 1
fi
