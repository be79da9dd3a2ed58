// Package proc starts the lab's long-running processes inside network namespaces and stops them by the PID it
// recorded, and only after checking that the PID still runs a command line naming the lab's state directory.
package proc
