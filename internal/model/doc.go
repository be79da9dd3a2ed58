// Package model turns the API objects and the node's own facts into validated Go types that the pure
// renderers consume, so that bad input is rejected once, here, with a field path.
package model
