#!/usr/bin/env bash
# Regenerates internal/apply/ovs/ovsdbmodel from the Open vSwitch schema with libovsdb's modelgen, built from
# the libovsdb version pinned in go.mod (so no tool download). SCHEMA defaults to the packaged schema.
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMA=${SCHEMA:-/usr/share/openvswitch/vswitch.ovsschema}
OUT=internal/apply/ovs/ovsdbmodel
[[ -r $SCHEMA ]] || { echo "schema $SCHEMA not found: install openvswitch-common or set SCHEMA" >&2; exit 1; }
find "$OUT" -name "*.go" ! -name doc.go -delete 2>/dev/null || true
go run github.com/ovn-org/libovsdb/cmd/modelgen -p ovsdbmodel -o "$OUT" "$SCHEMA"
gofmt -s -w "$OUT"
