// Package ovsdbmodel holds the libovsdb models of the Open_vSwitch database, generated from the packaged
// vswitch.ovsschema by hack/ovs-models.sh so that internal/apply/ovs reads and writes typed rows.
package ovsdbmodel

//go:generate ../../../../hack/ovs-models.sh
