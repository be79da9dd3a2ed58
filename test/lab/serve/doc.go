// Package serve is the lab's tiny HTTP server, run inside a pod's (or the external client's) network
// namespace: it answers its name, the client address it saw and blobs of any size, which is all the
// end-to-end checks need to tell who answered, whether the source was NATed and whether the MTU is right.
package serve
