package proc

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Spec describes one process to start inside a network namespace.
type Spec struct {
	// NetNS is the network namespace to run in (`ip netns exec`); empty runs in the caller's namespace.
	NetNS string
	// Argv is the command and its arguments; one of them must contain Marker so Stop can recognise it.
	Argv []string
	// Env is added to the caller's environment.
	Env []string
	// Log receives stdout and stderr (appended); empty discards them.
	Log string
	// PIDFile is where the PID is recorded as soon as the process started.
	PIDFile string
	// Marker is a string the process's command line must contain (the lab's state directory).
	Marker string
}

// Process is a started process; its zombie is reaped in the background so kill -9 tests see it gone.
type Process struct {
	PID  int
	done chan struct{}
}

// Start starts the process in its own session (it outlives the caller) and records its PID. With `ip netns
// exec` the PID is the final program's, because ip execs it after joining the namespace.
func Start(s Spec) (*Process, error) {
	if len(s.Argv) == 0 {
		return nil, errors.New("failed to start a process: empty command")
	}
	if s.Marker == "" || !strings.Contains(strings.Join(s.Argv, "\x00"), s.Marker) {
		return nil, fmt.Errorf("failed to start %s: its command line does not contain the marker %q", s.Argv[0], s.Marker)
	}
	argv := s.Argv
	if s.NetNS != "" {
		argv = append([]string{"ip", "netns", "exec", s.NetNS}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if s.Log != "" {
		if err := os.MkdirAll(filepath.Dir(s.Log), 0o750); err != nil {
			return nil, fmt.Errorf("failed to create the log directory of %s: %w", s.Argv[0], err)
		}
		f, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("failed to open the log of %s: %w", s.Argv[0], err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("failed to start %s: %w", s.Argv[0], err)
	}
	p := &Process{PID: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	if s.PIDFile != "" {
		if err := WritePIDFile(s.PIDFile, p.PID); err != nil {
			return p, err
		}
	}
	return p, nil
}

// Exited returns a channel closed once the process has exited (only for processes this program started).
func (p *Process) Exited() <-chan struct{} { return p.done }

// WritePIDFile records pid in path atomically.
func WritePIDFile(path string, pid int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("failed to create the directory of %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)+"\n"), 0o640); err != nil {
		return fmt.Errorf("failed to write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("failed to rename %s: %w", tmp, err)
	}
	return nil
}

// ReadPIDFile returns the PID recorded in path; 0 and no error when the file does not exist.
func ReadPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("failed to read %s: %w", path, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("failed to parse the PID in %s: %q", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}

// Alive reports whether pid runs and is not a zombie (detached daemons are reaped by PID 1 only later).
func Alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may itself contain spaces or parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// Ours reports whether pid is alive and its command line contains marker, i.e. it still is a process this
// lab started and not a stranger that reused the PID.
func Ours(pid int, marker string) bool {
	if pid <= 1 || !Alive(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(cmdline, []byte(marker))
}

// Stop sends sig to pid when it is ours, waits up to grace for it to exit and then sends SIGKILL. It returns
// nil when the process is gone (or was never ours).
func Stop(pid int, marker string, sig syscall.Signal, grace time.Duration) error {
	if !Ours(pid, marker) {
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("failed to signal PID %d: %w", pid, err)
	}
	if waitGone(pid, grace) {
		return nil
	}
	if !Ours(pid, marker) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("failed to kill PID %d: %w", pid, err)
	}
	if waitGone(pid, 5*time.Second) {
		return nil
	}
	return fmt.Errorf("failed to stop PID %d: still running after SIGKILL", pid)
}

// StopPIDFile stops the process recorded in path (see Stop) and removes the file.
func StopPIDFile(path, marker string, sig syscall.Signal, grace time.Duration) error {
	pid, err := ReadPIDFile(path)
	if err != nil {
		_ = os.Remove(path)
		return err
	}
	if pid != 0 {
		if err := Stop(pid, marker, sig, grace); err != nil {
			return err
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to remove %s: %w", path, err)
	}
	return nil
}

// PIDFiles returns every *.pid file under dir, sorted, so a teardown finds the processes of a crashed run.
func PIDFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".pid") {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to list the PID files under %s: %w", dir, err)
	}
	sort.Strings(out)
	return out, nil
}

// Children returns the PIDs whose parent is ppid.
func Children(ppid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			out = append(out, pid)
		}
	}
	return out
}

// Comm returns the command name of pid ("" when it is gone).
func Comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if !Alive(pid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
