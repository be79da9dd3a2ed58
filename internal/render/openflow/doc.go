// Package openflow renders a node's complete desired OpenFlow pipeline for br0 from a model.NodeView, as a
// pure function whose text is exactly what ovs-ofctl prints back, so the applier can diff it against the
// switch.
package openflow
