// Package ovs is the only code that writes Open vSwitch: it keeps the SDN bridge and its ports as declared
// (OVSDB through libovsdb) and the bridge's flows equal to a desired set (OpenFlow bundles through
// go-openvswitch), always by diff against what the switch has; see README.md.
package ovs
