package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// State is what a lab records about itself in <StateDir>/state.json, so another process (the CLI, a test)
// can open a running lab.
type State struct {
	Name    string      `json:"name"`
	Created time.Time   `json:"created"`
	Nodes   []NodeState `json:"nodes"`
	Pods    []PodState  `json:"pods"`
}

// NodeState is one node of the lab.
type NodeState struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
	IP    string `json:"ip"`
	NetNS string `json:"netns"`
}

// PodState is one pod the lab created.
type PodState struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	Node        string `json:"node"`
	NetNS       string `json:"netns"`
	IP          string `json:"ip"`
	ContainerID string `json:"containerID"`
	UID         string `json:"uid"`
}

// Node returns the node called name.
func (s *State) Node(name string) (NodeState, bool) {
	i := slices.IndexFunc(s.Nodes, func(n NodeState) bool { return n.Name == name })
	if i < 0 {
		return NodeState{}, false
	}
	return s.Nodes[i], true
}

// Pod returns the pod namespace/name.
func (s *State) Pod(namespace, name string) (PodState, bool) {
	i := slices.IndexFunc(s.Pods, func(p PodState) bool { return p.Namespace == namespace && p.Name == name })
	if i < 0 {
		return PodState{}, false
	}
	return s.Pods[i], true
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// loadState reads the lab's state; it fails with fs.ErrNotExist when the lab was never brought up.
func loadState(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, fmt.Errorf("failed to read the lab state: %w", err)
	}
	s := &State{}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", statePath(dir), err)
	}
	return s, nil
}

func saveState(dir string, s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("failed to encode the lab state: %w", err)
	}
	tmp := statePath(dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return fmt.Errorf("failed to write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, statePath(dir)); err != nil {
		return fmt.Errorf("failed to rename %s: %w", tmp, err)
	}
	return nil
}

// updateState changes the state under an exclusive lock on <dir>/lock, so several processes (the CLI and a
// test, or goroutines creating pods) never lose each other's updates.
func updateState(dir string, f func(*State) error) error {
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return fmt.Errorf("failed to open the lab lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("failed to lock the lab state: %w", err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	s, err := loadState(dir)
	if err != nil {
		return err
	}
	if err := f(s); err != nil {
		return err
	}
	return saveState(dir, s)
}

// isNotExist reports whether err says a lab has no state.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
