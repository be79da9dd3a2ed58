package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// socket is a NETLINK_NETFILTER socket created inside the target network namespace, used to send batches.
type socket struct {
	fd int
}

// openSocket creates the socket in the namespace of nsFile (nil: the caller's). Only the socket creation
// runs in the namespace, on a locked thread that is put back before it is released.
func openSocket(nsFile *os.File) (*socket, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if nsFile != nil {
			orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
			if err != nil {
				ch <- result{err: err}
				return // the thread stays locked and exits with the goroutine
			}
			defer orig.Close()
			if err := unix.Setns(int(nsFile.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{err: fmt.Errorf("failed to enter the network namespace: %w", err)}
				return
			}
			defer func() {
				if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
					runtime.UnlockOSThread()
				}
			}()
		} else {
			defer runtime.UnlockOSThread()
		}
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("failed to open a netfilter netlink socket: %w", r.err)
	}
	if err := unix.Bind(r.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(r.fd)
		return nil, fmt.Errorf("failed to bind the netlink socket: %w", err)
	}
	// Errors of a big batch must fit in the receive buffer.
	_ = unix.SetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	return &socket{fd: r.fd}, nil
}

func (s *socket) close() error {
	return unix.Close(s.fd)
}

// kernelError is an error the kernel returned for one message of a batch.
type kernelError struct {
	op    op
	errno syscall.Errno
}

func (e *kernelError) Error() string {
	return fmt.Sprintf("%s %s: %v", e.op.kind, e.op.name, e.errno)
}

func (e *kernelError) Unwrap() error { return e.errno }

// send sends one batch and returns the first error the kernel reported. nf_tables processes a batch
// synchronously inside sendmsg, so once it returns every error is already queued on the socket; no
// message asks for an acknowledgement, so a successful batch queues nothing.
func (s *socket) send(b *batch) error {
	buf := b.finish()
	// A netlink message to the kernel must fit in the send buffer.
	if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, len(buf)+(1<<16)); err != nil {
		return fmt.Errorf("failed to size the netlink send buffer for %d bytes: %w", len(buf), err)
	}
	if err := unix.Sendto(s.fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("failed to send the nftables batch (%d bytes): %w", len(buf), err)
	}
	var first error
	rb := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(s.fd, rb, unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK) {
			return first
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			if first == nil {
				first = fmt.Errorf("failed to read the kernel's answer: %w", err)
			}
			return first
		}
		for msgs := rb[:n]; len(msgs) >= unix.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(msgs))
			typ := binary.NativeEndian.Uint16(msgs[4:])
			if l < unix.NLMSG_HDRLEN || l > len(msgs) {
				break
			}
			if typ == unix.NLMSG_ERROR && l >= unix.NLMSG_HDRLEN+4+unix.NLMSG_HDRLEN {
				code := int32(binary.NativeEndian.Uint32(msgs[unix.NLMSG_HDRLEN:]))
				seq := binary.NativeEndian.Uint32(msgs[unix.NLMSG_HDRLEN+4+8:])
				if code != 0 && first == nil {
					ke := &kernelError{errno: syscall.Errno(-code)}
					ke.op = b.describe(seq)
					first = ke
				}
			}
			msgs = msgs[(l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1):]
		}
	}
}
