package link

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ethtoolValue is struct ethtool_value of <linux/ethtool.h>.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with the ifr_data member of the union (40 bytes on 64-bit kernels).
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// setTxChecksum turns transmit checksum offload of ifName in ns on or off with the ethtool ioctl
// (ETHTOOL_STXCSUM, what `ethtool -K ifName tx off` sends); the kernel also drops TSO, which depends on it.
func setTxChecksum(ns netns.NsHandle, ifName string, on bool) error {
	var v uint32
	if on {
		v = 1
	}
	if _, err := ethtool(ns, ifName, unix.ETHTOOL_STXCSUM, v); err != nil {
		return fmt.Errorf("failed to turn transmit checksum offload of %s %s: %w", ifName, onOff(on), err)
	}
	return nil
}

// txChecksum reports whether transmit checksum offload of ifName in ns is on (ETHTOOL_GTXCSUM).
func txChecksum(ns netns.NsHandle, ifName string) (bool, error) {
	v, err := ethtool(ns, ifName, unix.ETHTOOL_GTXCSUM, 0)
	if err != nil {
		return false, fmt.Errorf("failed to read transmit checksum offload of %s: %w", ifName, err)
	}
	return v != 0, nil
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// ethtool sends one ethtool_value command for ifName through a socket opened inside ns (SIOCETHTOOL resolves
// the name in the socket's namespace) and returns the data the kernel wrote back.
func ethtool(ns netns.NsHandle, ifName string, cmd, data uint32) (uint32, error) {
	if len(ifName) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q is too long", ifName)
	}
	fd, err := socketIn(ns)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	val := &ethtoolValue{cmd: cmd, data: data}
	var ifr ifreqData
	copy(ifr.name[:], ifName)
	ifr.data = unsafe.Pointer(val)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(val)
	if errno != 0 {
		return 0, errno
	}
	return val.data, nil
}

// socketIn opens an AF_INET datagram socket inside ns. Only the socket() call runs in ns, on a thread of its
// own; a thread that cannot return to its namespace is left locked so the runtime discards it.
func socketIn(ns netns.NsHandle) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("failed to get the current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			ch <- result{-1, fmt.Errorf("failed to enter the pod network namespace: %w", err)}
			return
		}
		fd, serr := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err := netns.Set(orig); err != nil {
			if serr == nil {
				unix.Close(fd)
			}
			ch <- result{-1, fmt.Errorf("failed to return to the agent's network namespace: %w", err)}
			return // the thread stays locked and exits with this goroutine
		}
		runtime.UnlockOSThread()
		if serr != nil {
			ch <- result{-1, fmt.Errorf("failed to open a socket in the pod network namespace: %w", serr)}
			return
		}
		ch <- result{fd, nil}
	}()
	r := <-ch
	return r.fd, r.err
}
