#!/usr/bin/env bash
# Refresh the browser libraries TPS serves itself (tps/api/static/vendor/).
#
# The dashboard and GraphiQL must work on a machine with no internet and only Python,
# so the minified builds are committed; this script is how they are produced. It
# fetches the pinned npm tarballs with `npm pack` (no install scripts run), copies the
# browser builds and their licenses, and drops source-map references (the maps are not
# shipped). Bump a version below, run it, check the page, commit the result.
#
#   tools/vendor_assets.sh            # needs node/npm and the npm registry
set -euo pipefail

UPLOT=1.6.32
REACT=18.3.1
# GraphiQL 4+ ships no UMD build (ESM only, needs a bundler or import maps from a CDN);
# 3.x is the last line with graphiql.min.js usable from a plain <script> tag.
GRAPHIQL=3.8.3

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/tps/api/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
npm pack --silent "uplot@$UPLOT" "react@$REACT" "react-dom@$REACT" "graphiql@$GRAPHIQL" >/dev/null
for tgz in *.tgz; do
    mkdir "${tgz%.tgz}"
    tar -xzf "$tgz" -C "${tgz%.tgz}"
done

# copy SRC DEST: the file without its trailing sourceMappingURL comment.
copy() {
    mkdir -p "$(dirname "$2")"
    sed -e '/^\/\/# sourceMappingURL=/d' -e 's#/\*\# sourceMappingURL=[^*]*\*/##' "$1" >"$2"
}

rm -rf "$dest"
copy "uplot-$UPLOT/package/dist/uPlot.iife.min.js" "$dest/uplot/uPlot.iife.min.js"
copy "uplot-$UPLOT/package/dist/uPlot.min.css" "$dest/uplot/uPlot.min.css"
cp "uplot-$UPLOT/package/LICENSE" "$dest/uplot/LICENSE"
copy "react-$REACT/package/umd/react.production.min.js" "$dest/react/react.production.min.js"
cp "react-$REACT/package/LICENSE" "$dest/react/LICENSE"
copy "react-dom-$REACT/package/umd/react-dom.production.min.js" "$dest/react-dom/react-dom.production.min.js"
cp "react-dom-$REACT/package/LICENSE" "$dest/react-dom/LICENSE"
copy "graphiql-$GRAPHIQL/package/graphiql.min.js" "$dest/graphiql/graphiql.min.js"
copy "graphiql-$GRAPHIQL/package/graphiql.min.css" "$dest/graphiql/graphiql.min.css"
cp "graphiql-$GRAPHIQL/package/LICENSE" "$dest/graphiql/LICENSE"

cat >"$dest/README.md" <<README
# Vendored browser libraries

Served by TPS from \`/static/vendor/\` so the dashboard (\`/\`) and GraphiQL
(\`GET /graphql\` from a browser) work with no internet. Produced by
\`tools/vendor_assets.sh\` from the npm registry; do not edit by hand.

| package | version | files | license |
|---|---|---|---|
| uplot | $UPLOT | \`uplot/uPlot.iife.min.js\`, \`uplot/uPlot.min.css\` | MIT (\`uplot/LICENSE\`) |
| react | $REACT | \`react/react.production.min.js\` (UMD) | MIT (\`react/LICENSE\`) |
| react-dom | $REACT | \`react-dom/react-dom.production.min.js\` (UMD) | MIT (\`react-dom/LICENSE\`) |
| graphiql | $GRAPHIQL | \`graphiql/graphiql.min.js\` (UMD, bundles graphql-js), \`graphiql/graphiql.min.css\` | MIT (\`graphiql/LICENSE\`) |

GraphiQL stays on 3.x: 4.0 dropped the UMD build, and TPS uses no bundler.
Source-map comments are stripped (the maps are not shipped).
README
echo "vendored into $dest:"
(cd "$dest" && find . -type f -printf '%8s  %p\n' | sort -k2)
